"""Monitoring: drift monitors and checks (:mod:`.service`), alert rules and delivery (:mod:`.alerts`), webhook
URL validation (:mod:`.webhooks`) and the drift PNG (:mod:`.plot`)."""
