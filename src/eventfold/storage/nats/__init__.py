"""The event log on a NATS JetStream cluster: API nodes publish accepted batches to a
replicated stream and answer 202 on its acknowledgement (``NatsPublisher``); workers
fetch them through one durable pull consumer and apply them to the database
(``NatsConsumer``, ``SqlStorage.apply_logged``).

Subjects are ``<stream>.batches.<account id>``: each account's batches form a partition
that can be filtered, inspected or purged on its own, and all workers share the one
consumer, which hands each batch to one of them at a time. Which worker folds which batch
and in what order does not matter: the fold is order-independent (see domain/profile.py).
"""

from eventfold.storage.nats.connection import CONSUMER
from eventfold.storage.nats.consumer import NatsConsumer
from eventfold.storage.nats.publisher import NatsPublisher

__all__ = ["CONSUMER", "NatsConsumer", "NatsPublisher"]
