"""The web app: `create_app()` puts the blueprints, the pool, the keys and the error handlers together."""

from __future__ import annotations

import click
from flask import Flask
from flask_cors import CORS

from flask_tasks.auth import keys_or_exit, load_keys
from flask_tasks.clients import clients_cli, decoy_hash
from flask_tasks.config import Settings
from flask_tasks.group_commit import GroupCommit
from flask_tasks.registry import Registry
from flask_tasks.startup import start_process
from flask_tasks.tasks_cli import tasks_cli
from flask_tasks.web import (
    dashboard_routes,
    errors,
    list_routes,
    metrics_routes,
    nask_routes,
    peer_routes,
    pool,
    request_io,
    task_routes,
    token_routes,
)
from flask_tasks.web.doc_routes import PARTS_KEY, docs
from flask_tasks.webhooks import generate_secret


@click.command("webhook-secret")
def webhook_secret_cli() -> None:
    """Print a new secret for WEBHOOK_SECRET (whsec_ and 32 random bytes in base64)."""
    click.echo(generate_secret())


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> Flask:
    """The Flask app. Without arguments, settings and tasks come from the environment."""
    if settings is None or registry is None:
        settings, registry = start_process()
        keys = keys_or_exit(settings)
    else:
        keys = load_keys(settings)  # a test's settings: let it see the ConfigError
    app = Flask(__name__)
    app.config.update(SETTINGS=settings, REGISTRY=registry, MAX_CONTENT_LENGTH=settings.max_content_length)
    app.json.sort_keys = False
    app.extensions[pool.EXTENSION] = pool.ConnectionPool(settings)
    # Single-task inserts share commits only between threads of one worker.
    group = settings.group_commit and settings.gunicorn_threads > 1
    app.extensions[pool.GROUP_COMMIT] = GroupCommit(settings) if group else None
    app.extensions[request_io.KEYS] = keys
    if keys.signing is not None:
        decoy_hash()  # now rather than in the first request for an unknown client id
    # Tokens travel in the Authorization header, never in cookies: no credentialed CORS.
    anyone = "*" in settings.frontend_url
    CORS(
        app,
        origins="*" if anyone else settings.frontend_url,
        send_wildcard=anyone,
        supports_credentials=False,
        expose_headers=["WWW-Authenticate", "Retry-After", "Preference-Applied"],
    )
    app.cli.add_command(clients_cli)
    app.cli.add_command(webhook_secret_cli)
    app.cli.add_command(tasks_cli)
    app.register_blueprint(list_routes.listing)
    app.register_blueprint(task_routes.tasks)
    app.register_blueprint(token_routes.tokens)
    app.register_blueprint(nask_routes.nask)
    app.register_blueprint(peer_routes.peer_callbacks)
    app.register_blueprint(dashboard_routes.dashboard)
    app.register_blueprint(metrics_routes.metrics)
    app.register_blueprint(docs)
    app.extensions[PARTS_KEY] = [
        task_routes.document_part,
        token_routes.document_part,
        nask_routes.document_part,
        peer_routes.document_part,
        list_routes.document_part,
        dashboard_routes.document_part,
        metrics_routes.document_part,
    ]
    app.teardown_appcontext(pool.close_db)
    errors.register(app)
    return app
