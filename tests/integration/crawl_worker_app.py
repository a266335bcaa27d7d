"""A Faust app for the worker test: the product's app with the crawl registered the way
``streams.app`` is meant to (``register_crawl``). Start it with
``faust -A tests.integration.crawl_worker_app worker``; ``BGE_TEST_CRAWL_SCHEMA`` names the
crawl's scratch schema."""

from __future__ import annotations

import os

from domain.crawl import CrawlConfig, SnowballConfig
from streams.app import create_app
from streams.config import load_settings
from streams.topology import Topic
from streams.stages.crawl import register_crawl

settings = load_settings()
app = create_app(settings)


def _topic(name: Topic):  # type: ignore[no-untyped-def]
    return app.topic(settings.topic(name), key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", partitions=settings.bge_topic_partitions)


register_crawl(app, settings, sender=app.sender, events_topic=_topic(Topic.GROWTH_EVENTS),
               crawl_topic=_topic(Topic.GROWTH_CRAWL), schema=os.environ["BGE_TEST_CRAWL_SCHEMA"],
               config=CrawlConfig(snowball=SnowballConfig(max_followers=10, min_followers=1, page_size=3,
                                                          pages_per_user=20)))
