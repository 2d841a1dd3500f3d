"""Cloud Pub/Sub in the loop: provisioning the topic and subscription, and pulling notifications.

``clients``       gRPC clients for Google or an emulator (``PUBSUB_EMULATOR_HOST``)
``provisioning``  topic, Gmail's publisher grant and the push or pull subscription, idempotently
``cli``           ``python -m app pubsub setup ...``
``subscriber``    :class:`PullSubscriber`: streaming pull feeding the same intake as the webhook
"""
