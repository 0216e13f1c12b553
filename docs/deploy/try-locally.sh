#!/usr/bin/env bash
# Try the nginx site and goflypy.toml of this folder, as written, on one
# machine: goflypy, and nginx with TLS (a self-signed certificate) in front of
# it, on 127.0.0.1 ports that are free when the script starts; both are
# stopped at the end. The only edits made to the site are the ones a real
# install makes too: the ports, the certificate paths and the upstream port.
#
#   apt-get install -y nginx openssl curl   # Debian's nginx
#   docs/deploy/try-locally.sh              # from the repository root
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/docs/deploy"
PY="${PY:-$ROOT/.venv/bin/python}"
WORK=$(mktemp -d /tmp/goflypy-deploy.XXXXXX)
chmod 0755 "$WORK"   # nginx workers run as nobody
NGINX_PID=""
GOFLY_PID=""

stop() {
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null || true
    [ -n "$GOFLY_PID" ] && kill -TERM "$GOFLY_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap stop EXIT

# Three ports nobody listens on now: goflypy, nginx HTTP, nginx HTTPS.
PORTS=$("$PY" -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')
read -r APP_PORT HTTP_PORT TLS_PORT <<< "$PORTS"
export APP_PORT HTTP_PORT TLS_PORT

# A self-signed certificate for chat.example.com.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=chat.example.com" \
    -addext "subjectAltName=DNS:chat.example.com,IP:127.0.0.1" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

# goflypy with the deployment config, on a test port and data directory; a
# small per-address connection budget makes the real-IP handling visible.
sed -e "s/^port = 8080/port = $APP_PORT/" \
    -e "s|^public_url = .*|public_url = \"https://chat.example.com:$TLS_PORT\"|" \
    "$HERE/goflypy.toml" > "$WORK/goflypy.toml"
echo 'connects_per_ip_per_min = 2' >> "$WORK/goflypy.toml"
GOFLY_DATA_DIR="$WORK/data" GOFLY_LOG_LEVEL=warning \
    "$PY" -m goflypy serve --config "$WORK/goflypy.toml" > "$WORK/goflypy.log" 2>&1 &
GOFLY_PID=$!

# The site, with the same substitutions an install makes.
sed -e "s/listen 443 ssl http2;/listen 127.0.0.1:$TLS_PORT ssl http2;/" \
    -e "s/listen 80;/listen 127.0.0.1:$HTTP_PORT;/" \
    -e '/listen \[::\]/d' \
    -e "s|server 127.0.0.1:8080;|server 127.0.0.1:$APP_PORT;|" \
    -e "s|/etc/letsencrypt/live/chat.example.com/fullchain.pem|$WORK/cert.pem|" \
    -e "s|/etc/letsencrypt/live/chat.example.com/privkey.pem|$WORK/key.pem|" \
    "$HERE/nginx-goflypy.conf" > "$WORK/site.conf"
cat > "$WORK/nginx.conf" <<EOF
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
worker_processes 1;
events { worker_connections 1024; }
http {
    access_log $WORK/nginx-access.log;
    client_body_temp_path $WORK/body;
    proxy_temp_path $WORK/proxy;
    fastcgi_temp_path $WORK/fastcgi;
    uwsgi_temp_path $WORK/uwsgi;
    scgi_temp_path $WORK/scgi;
    include $WORK/site.conf;
}
EOF
nginx -t -c "$WORK/nginx.conf" -p "$WORK"
nginx -c "$WORK/nginx.conf" -p "$WORK" &
NGINX_PID=$!

# Wait for our own goflypy (not whatever else may answer on the machine).
for _ in $(seq 150); do
    kill -0 "$GOFLY_PID" 2>/dev/null || { cat "$WORK/goflypy.log"; exit 1; }
    curl -sf -o /dev/null "http://127.0.0.1:$APP_PORT/healthz" && break
    sleep 0.2
done

# Checks: HTTP redirect, TLS page, WebSocket upgrade through TLS, real IP.
"$PY" - <<'EOF'
import asyncio, json, os, ssl
import aiohttp

BASE = f"https://127.0.0.1:{os.environ['TLS_PORT']}"
HTTP = f"http://127.0.0.1:{os.environ['HTTP_PORT']}"

def connector(source_ip):
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    return aiohttp.TCPConnector(ssl=tls, local_addr=(source_ip, 0))

async def visitor(source_ip, forged):
    """Open a visitor socket from source_ip; returns the first frame after hello."""
    async with aiohttp.ClientSession(connector=connector(source_ip)) as http:
        headers = {"X-Forwarded-For": forged, "Host": "chat.example.com"}
        async with http.ws_connect(BASE + "/ws/visitor", headers=headers) as ws:
            await ws.send_json({"type": "hello", "visitor_token": None})
            return json.loads((await ws.receive(timeout=10)).data)

async def main():
    async with aiohttp.ClientSession(connector=connector("127.0.0.1")) as http:
        async with http.get(HTTP + "/chat", allow_redirects=False) as r:
            assert r.status == 301, r.status
            assert r.headers["Location"].startswith("https://"), r.headers
            print("HTTP -> HTTPS redirect:", r.status, r.headers["Location"])
        async with http.get(BASE + "/healthz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
            print("TLS:", r.status, "/healthz ok through nginx")
        async with http.get(BASE + "/metrics") as r:
            assert r.status == 404, r.status
            print("/metrics from outside:", r.status)
    first = await visitor("127.0.0.2", "6.6.6.6")
    assert first["type"] == "welcome", first
    print("wss upgrade through nginx: welcome received")
    # Same shopper, another forged address: still counted as 127.0.0.2.
    second = await visitor("127.0.0.2", "7.7.7.7")
    assert second["type"] == "error" and second["code"] == "rate_limited", second
    # Another shopper behind the same nginx has a budget of its own.
    third = await visitor("127.0.0.3", "6.6.6.6")
    assert third["type"] == "welcome", third
    print("real IP: forged X-Forwarded-For ignored, each shopper counted apart")

asyncio.run(main())
EOF

# SIGTERM, as `systemctl stop` sends it: goflypy must exit cleanly.
kill -TERM "$GOFLY_PID"
wait "$GOFLY_PID"
GOFLY_PID=""
echo "nginx site and goflypy.toml work as written"
