# The pre-delete hook of `helm uninstall` (templates/operator/uninstall.yaml):
# delete the TaskHub, wait for the operator to release it, else drop its finalizer.
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

name, namespace, wait = sys.argv[1], sys.argv[2], float(sys.argv[3])
# The pod's service account; both overridable for the chart's tests.
account = os.environ.get("SERVICE_ACCOUNT_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")
api = os.environ.get("KUBERNETES_API", "https://kubernetes.default.svc")
with open(f"{account}/token") as handle:
    token = handle.read().strip()
ca = f"{account}/ca.crt"
tls = ssl.create_default_context(cafile=ca if os.path.exists(ca) else None)
url = f"{api}/apis/taskhub.io/v1alpha1/namespaces/{namespace}/taskhubs/{name}"


def call(method, body=None):
    headers = {"Authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/merge-patch+json"
        data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, context=tls, timeout=10) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


if call("DELETE") == 404:
    print(f"TaskHub {name}: none to delete")
    sys.exit(0)
deadline = time.monotonic() + wait
while time.monotonic() < deadline:
    if call("GET") == 404:
        print(f"TaskHub {name}: deleted and released by the operator")
        sys.exit(0)
    time.sleep(2)
status = call("PATCH", {"metadata": {"finalizers": None}})
print(f"TaskHub {name}: not released within {wait:g}s; finalizers removed (HTTP {status})")
sys.exit(0 if status in (200, 404) else 1)
