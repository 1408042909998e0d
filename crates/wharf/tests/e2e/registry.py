# A minimal image registry for the tests (HTTP API v2, basic auth): it serves, read-only,
# one image from a `docker save` archive under one name and tag. Nothing is pushed.
# Usage: registry.py PORT ARCHIVE NAME TAG USER PASSWORD LOG
import base64, gzip, hashlib, json, sys, tarfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, archive, name, tag, user, password, log = sys.argv[1:8]
blobs = {}
with tarfile.open(archive) as tar:
    index = json.load(tar.extractfile("manifest.json"))[0]
    config = tar.extractfile(index["Config"]).read()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    blobs[config_digest] = config
    layers = []
    for path in index["Layers"]:
        data = gzip.compress(tar.extractfile(path).read(), mtime=0)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        layers.append({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                       "size": len(data), "digest": digest})
manifest = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
               "size": len(config), "digest": config_digest},
    "layers": layers,
}).encode()
manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

class Registry(BaseHTTPRequestHandler):
    def answer(self, head):
        authorized = self.headers.get("Authorization") == expected
        with open(log, "a") as f:
            f.write(f"{self.command} {self.path} {'authorized' if authorized else 'anonymous'}\n")
        if not authorized:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="wharf-test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path in ("/v2/", "/v2"):
            body, kind = b"{}", "application/json"
        elif self.path in (f"/v2/{name}/manifests/{tag}", f"/v2/{name}/manifests/{manifest_digest}"):
            body, kind = manifest, "application/vnd.docker.distribution.manifest.v2+json"
        elif self.path.startswith(f"/v2/{name}/blobs/") and self.path.rsplit("/", 1)[1] in blobs:
            body, kind = blobs[self.path.rsplit("/", 1)[1]], "application/octet-stream"
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if "manifests" in self.path:
            self.send_header("Docker-Content-Digest", manifest_digest)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_GET(self):
        self.answer(False)

    def do_HEAD(self):
        self.answer(True)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(port)), Registry).serve_forever()
