"""One module per outside system (Kafka, RabbitMQ, Slack, alert payloads, endpoint switches).

Nothing here imports Prefect: each module can be used and tested against its real system alone.
"""
