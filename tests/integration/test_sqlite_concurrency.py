"""The embedded default never fails with "database is locked": writers from several processes queue."""

import subprocess
import sys

from mlhub.store.database import Database
from mlhub.tenancy import TenantService

WRITER = """
import sys
from mlhub.store.database import Database
from mlhub.tenancy import TenantService
db = Database(sys.argv[1])
svc = TenantService(db)
p = svc.authenticate(sys.argv[2])
for i in range(int(sys.argv[3])):
    info, _ = svc.create_key(p, f"w{sys.argv[4]}-{i}")
    svc.revoke_key(p, str(info.id))
print("ok")
"""


def test_concurrent_writer_processes_on_sqlite_all_succeed(tmp_path):
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    db = Database(url)
    db.upgrade()
    svc = TenantService(db)
    _, key = svc.create_tenant("busy")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, key, "25", str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(4)]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err for _, err in results]
    p = svc.authenticate(key)
    keys = svc.list_keys(p, include_revoked=True)
    assert len(keys) == 1 + 4 * 25
    assert sum(k.revoked_at is not None for k in keys) == 100
    db.dispose()
