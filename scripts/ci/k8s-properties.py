"""What matters in the rendered Kubernetes objects (deploy/kubernetes), beyond the schemas.

    python k8s-properties.py BASE.yaml KEDA.yaml PUMP_GRACE_S

Reads `kubectl kustomize` output (ruamel.yaml, which check-jsonschema brings); exits 1 naming
every property that is missing.
"""

from __future__ import annotations

import sys
from typing import Any

from ruamel.yaml import YAML


def load(path: str) -> dict[str, dict[str, Any]]:
    with open(path) as f:
        docs = [d for d in YAML(typ="safe").load_all(f) if d]
    return {d["kind"]: d for d in docs}


def check_deployment(dep: dict[str, Any], grace: int, want: list[str]) -> None:
    pod = dep["spec"]["template"]["spec"]
    (ctr,) = pod["containers"]
    psc, csc = pod.get("securityContext", {}), ctr.get("securityContext", {})
    res = ctr.get("resources", {})
    env = {e["name"]: e for e in ctr.get("env", [])}
    secrets = {"SUPABASE_URL", "AGENT_TOKEN", "ORGANIZATION_ID"}

    def probe(kind: str) -> Any:
        return ctr.get(kind, {}).get("httpGet", {}).get("path")

    checks = {
        f"terminationGracePeriodSeconds > {grace}": pod.get("terminationGracePeriodSeconds", 30)
        > grace,
        "liveness GET /healthz": probe("livenessProbe") == "/healthz",
        "readiness GET /readyz": probe("readinessProbe") == "/readyz",
        "runAsNonRoot": psc.get("runAsNonRoot") is True,
        "seccomp RuntimeDefault": psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
        "readOnlyRootFilesystem": csc.get("readOnlyRootFilesystem") is True,
        "allowPrivilegeEscalation false": csc.get("allowPrivilegeEscalation") is False,
        "capabilities drop ALL": csc.get("capabilities", {}).get("drop") == ["ALL"],
        "requests and limits for cpu and memory": all(
            k in res.get(t, {}) for t in ("requests", "limits") for k in ("cpu", "memory")
        ),
        "settings from Secret queue-pump-env": {"secretRef": {"name": "queue-pump-env"}}
        in ctr.get("envFrom", []),
        "health on 0.0.0.0": env.get("QUEUE_PUMP_HEALTH_HOST", {}).get("value") == "0.0.0.0",
        "no secret values in env": not (secrets & set(env)),
    }
    want += [k for k, ok in checks.items() if not ok]


def main() -> None:
    base, keda, grace = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
    want: list[str] = []
    if set(base) != {"Deployment", "PodDisruptionBudget"}:
        want.append(f"base renders Deployment + PodDisruptionBudget, not {sorted(base)}")
    if "Secret" in base or "Secret" in keda:
        want.append("no Secret in the repository")
    check_deployment(base["Deployment"], grace, want)
    check_deployment(keda["Deployment"], grace, want)
    if "replicas" in keda["Deployment"]["spec"]:
        want.append("keda overlay: the Deployment leaves replicas to KEDA")
    so = keda.get("ScaledObject", {}).get("spec", {})
    if so.get("minReplicaCount") != 1:
        want.append("keda: minReplicaCount 1 (always on)")
    if so.get("scaleTargetRef", {}).get("name") != base["Deployment"]["metadata"]["name"]:
        want.append("keda: scaleTargetRef names the Deployment")
    (trig,) = so.get("triggers", [{}])
    query = " ".join(trig.get("metadata", {}).get("query", "").split())
    for part in ("SELECT queue_pump.due_count('", "', 'agent')"):
        if part not in query:
            want.append(f"keda query has {part!r}")
    if trig.get("type") != "postgresql" or "TriggerAuthentication" not in keda:
        want.append("keda: postgresql trigger with a TriggerAuthentication")
    pdb = base["PodDisruptionBudget"]["spec"]
    if pdb.get("selector") != base["Deployment"]["spec"]["selector"]:
        want.append("PodDisruptionBudget selects the Deployment's Pods")
    if want:
        sys.exit("kubernetes objects lack: " + "; ".join(want))
    print("kubernetes properties ok")


main()
