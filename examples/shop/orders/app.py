"""The shop's orders service: joins the catalog's prices with the inventory's stock.

It finds its peers through configuration (CATALOG_URL, INVENTORY_URL), never through
hard-coded addresses. Standard library only.
"""

import json
import logging
import os
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

logging.basicConfig(level=os.environ.get("LOG_LEVEL", "info").upper(), format="orders %(levelname)s %(message)s")
log = logging.getLogger()


def fetch(url):
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.load(response)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            return self.reply(200, {"ok": True})
        if self.path in ("/", "/quote"):
            try:
                catalog = fetch(os.environ["CATALOG_URL"] + "/products")
                stock = fetch(os.environ["INVENTORY_URL"] + "/stock")["stock"]
            except Exception as error:  # a peer is down: say so instead of failing silently
                log.warning("peer unavailable: %s", error)
                return self.reply(502, {"error": f"a peer is unavailable: {error}"})
            lines = [
                {"sku": p["sku"], "name": p["name"], "price": p["price"], "in_stock": stock.get(p["sku"], 0)}
                for p in catalog["products"]
            ]
            return self.reply(200, {
                "service": "orders",
                "env": os.environ.get("WHARF_ENV"),
                "version": os.environ.get("WHARF_VERSION"),
                "greeting": catalog["greeting"],
                "max_items": int(os.environ.get("MAX_ITEMS_PER_ORDER", "10")),
                "lines": lines,
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
    log.info("listening on 127.0.0.1:%d, catalog at %s", port, os.environ.get("CATALOG_URL"))
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
