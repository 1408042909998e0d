"""The shop's catalog: products and prices over HTTP. Standard library only."""

import json
import logging
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PRODUCTS = [
    {"sku": "tea", "name": "Green tea", "price": 4.5},
    {"sku": "coffee", "name": "Espresso beans", "price": 9.0},
    {"sku": "cocoa", "name": "Hot cocoa", "price": 6.25},
]

logging.basicConfig(level=os.environ.get("LOG_LEVEL", "info").upper(), format="catalog %(levelname)s %(message)s")
log = logging.getLogger()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            return self.reply(200, {"ok": True})
        if self.path in ("/", "/products"):
            return self.reply(200, {
                "service": "catalog",
                "env": os.environ.get("WHARF_ENV"),
                "version": os.environ.get("WHARF_VERSION"),
                "instance": os.environ.get("WHARF_INSTANCE"),
                "greeting": os.environ.get("GREETING", ""),
                "currency": os.environ.get("CURRENCY", "EUR"),
                "products": PRODUCTS,
            })
        self.reply(404, {"error": "not found"})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        log.debug(fmt, *args)


if __name__ == "__main__":
    port = int(os.environ["PORT"])
    log.info("listening on 127.0.0.1:%d", port)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
