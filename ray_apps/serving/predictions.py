"""Answered predictions, published to the ``predictions`` topic (``serve.publish_predictions``).

Each score answered becomes one :class:`~ray_apps.streaming.messages.PredictionMessage` keyed
by symbol, with the model version and alias that gave it. Publishing never fails or slows a
request by more than queueing the messages: delivery is asynchronous, and a message the
producer cannot queue or deliver is counted and logged, not retried.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from ray_apps.config import Settings
from ray_apps.serving.schemas import RowScore
from ray_apps.serving.scoring import Entry, ScoreEntry
from ray_apps.streaming.messages import PredictionMessage
from ray_apps.streaming.topics import producer_config

log = logging.getLogger("ray.serve")


class PredictionPublisher:
    """Queues answered scores on the predictions topic.

    Args:
        settings: the platform settings (``kafka``, ``stream.predictions_topic``,
            ``serve.model_name``).

    Attributes:
        published: messages the broker acknowledged.
        failed: messages not queued or not delivered.
    """

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.stream.predictions_topic
        self.model_name = settings.serve.model_name
        # A short linger: predictions are few per request, and their consumers want them soon.
        self.producer = Producer(producer_config(settings) | {"linger.ms": 5})
        self.published = 0
        self.failed = 0

    def online(self, alias: str, entries: Iterable[Entry]) -> None:
        """Publishes the scored entries of a ``/v1/predict`` answer (error entries are not)."""
        now = datetime.now(UTC)
        self._publish(
            PredictionMessage(
                symbol=entry.symbol,
                ts=entry.as_of,
                score=entry.score,
                rank=entry.rank,
                model_name=self.model_name,
                model_version=entry.model_version,
                alias=alias,
                source="online",
                predicted_at=now,
            )
            for entry in entries
            if isinstance(entry, ScoreEntry)
        )

    def features(self, alias: str, version: str, scores: Iterable[RowScore]) -> None:
        """Publishes the scored rows of a ``/v1/predict/features`` answer.

        Rows without a score are not; a time without a zone is taken as UTC.
        """
        now = datetime.now(UTC)
        self._publish(
            PredictionMessage(
                symbol=row.symbol,
                ts=row.ts if row.ts.tzinfo else row.ts.replace(tzinfo=UTC),
                score=row.score,
                model_name=self.model_name,
                model_version=version,
                alias=alias,
                source="features",
                predicted_at=now,
            )
            for row in scores
            if row.score is not None
        )

    def flush(self, timeout_s: float = 5.0) -> int:
        """Waits for queued messages to be delivered; returns how many are still queued."""
        return self.producer.flush(timeout_s)

    def _publish(self, messages: Iterable[PredictionMessage]) -> None:
        for message in messages:
            try:
                self.producer.produce(
                    self.topic,
                    key=message.symbol.encode(),
                    value=message.model_dump_json().encode(),
                    on_delivery=self._delivered,
                )
            except (BufferError, KafkaException) as error:  # queue full, or the client refuses
                self._failure(str(error))
        self.producer.poll(0)  # runs the delivery callbacks that are due

    def _delivered(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.published += 1
        else:
            self._failure(error.str())

    def _failure(self, reason: str) -> None:
        self.failed += 1
        if self.failed == 1 or self.failed % 1000 == 0:
            log.warning(
                "predictions topic %s: %d messages not published (last: %s)",
                self.topic,
                self.failed,
                reason,
            )
