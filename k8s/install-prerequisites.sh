#!/usr/bin/env bash
# Install what the TaskHub chart builds on into a fresh cluster (minikube or
# any other), with the projects' official Helm charts and manifests:
#
#   - CloudNativePG operator        (Helm chart cloudnative-pg, ns cnpg-system)
#   - RabbitMQ Cluster Operator     (release manifest, ns rabbitmq-system)
#   - Keycloak operator + CRDs      (keycloak-k8s-resources, in the app namespace:
#                                    it watches the namespace it runs in)
#   - ingress-nginx                 (Helm chart ingress-nginx, ns ingress-nginx)
#   - prometheus-operator CRDs      (optional: WITH_PROMETHEUS_CRDS=1)
#   - the app namespace (k8s/namespace.yaml) and the `taskhub-auth` and
#     `taskhub-webhook-keys` Secrets
#
# Usage:  k8s/install-prerequisites.sh            # current kubectl context
#         NAMESPACE=taskhub WITH_PROMETHEUS_CRDS=1 k8s/install-prerequisites.sh
#
# Idempotent: re-running upgrades to the pinned versions below.
# Needs: kubectl, helm (v3.14+ or v4), openssl.
set -euo pipefail

NAMESPACE="${NAMESPACE:-taskhub}"
CNPG_CHART_VERSION="${CNPG_CHART_VERSION:-0.26.0}"
RABBITMQ_OPERATOR_VERSION="${RABBITMQ_OPERATOR_VERSION:-v2.12.0}"
# Keep in step with the CRDs the chart is tested against (shared/crds).
KEYCLOAK_VERSION="${KEYCLOAK_VERSION:-26.0.0}"
INGRESS_NGINX_CHART_VERSION="${INGRESS_NGINX_CHART_VERSION:-4.12.1}"
PROMETHEUS_CRDS_CHART_VERSION="${PROMETHEUS_CRDS_CHART_VERSION:-20.0.0}"
WITH_PROMETHEUS_CRDS="${WITH_PROMETHEUS_CRDS:-0}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
context="$(kubectl config current-context)"
log() { printf '\n==> %s\n' "$*"; }

for tool in kubectl helm openssl; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
log "Installing TaskHub prerequisites into context '${context}'"

log "Helm repositories"
helm repo add cnpg https://cloudnative-pg.github.io/charts --force-update >/dev/null
helm repo add ingress-nginx https://kubernetes.github.io/ingress-nginx --force-update >/dev/null
helm repo add prometheus-community https://prometheus-community.github.io/helm-charts --force-update >/dev/null
helm repo update >/dev/null

log "CloudNativePG operator (chart ${CNPG_CHART_VERSION})"
helm upgrade --install cnpg cnpg/cloudnative-pg \
  --namespace cnpg-system --create-namespace \
  --version "${CNPG_CHART_VERSION}" --wait

log "RabbitMQ Cluster Operator (${RABBITMQ_OPERATOR_VERSION})"
kubectl apply -f "https://github.com/rabbitmq/cluster-operator/releases/download/${RABBITMQ_OPERATOR_VERSION}/cluster-operator.yml"
kubectl -n rabbitmq-system rollout status deployment/rabbitmq-cluster-operator --timeout=300s

if [[ "${WITH_PROMETHEUS_CRDS}" == "1" ]]; then
  log "prometheus-operator CRDs (chart ${PROMETHEUS_CRDS_CHART_VERSION})"
  helm upgrade --install prometheus-operator-crds prometheus-community/prometheus-operator-crds \
    --namespace monitoring --create-namespace --version "${PROMETHEUS_CRDS_CHART_VERSION}"
fi

log "ingress-nginx (chart ${INGRESS_NGINX_CHART_VERSION})"
ingress_args=()
if [[ "${context}" == "minikube" ]]; then
  # Bind 80/443 on the node so that http://$(minikube ip)/ reaches it.
  ingress_args+=(--set controller.hostPort.enabled=true --set controller.service.type=NodePort)
fi
helm upgrade --install ingress-nginx ingress-nginx/ingress-nginx \
  --namespace ingress-nginx --create-namespace \
  --version "${INGRESS_NGINX_CHART_VERSION}" \
  --set controller.ingressClassResource.default=false \
  "${ingress_args[@]}" --wait

log "Namespace ${NAMESPACE}"
sed "s/name: taskhub$/name: ${NAMESPACE}/" "${here}/namespace.yaml" | kubectl apply -f -

log "Keycloak operator ${KEYCLOAK_VERSION} (namespace ${NAMESPACE})"
keycloak_base="https://raw.githubusercontent.com/keycloak/keycloak-k8s-resources/${KEYCLOAK_VERSION}/kubernetes"
kubectl apply -f "${keycloak_base}/keycloaks.k8s.keycloak.org-v1.yml"
kubectl apply -f "${keycloak_base}/keycloakrealmimports.k8s.keycloak.org-v1.yml"
kubectl -n "${NAMESPACE}" apply -f "${keycloak_base}/kubernetes.yml"
kubectl -n "${NAMESPACE}" rollout status deployment/keycloak-operator --timeout=300s

log "Secret taskhub-auth (token signing key)"
if ! kubectl -n "${NAMESPACE}" get secret taskhub-auth >/dev/null 2>&1; then
  kubectl -n "${NAMESPACE}" create secret generic taskhub-auth \
    --from-literal=secret-key="$(openssl rand -hex 32)"
else
  echo "exists, kept"
fi

log "Secret taskhub-webhook-keys (encrypts webhook signing secrets at rest)"
if ! kubectl -n "${NAMESPACE}" get secret taskhub-webhook-keys >/dev/null 2>&1; then
  kubectl -n "${NAMESPACE}" create secret generic taskhub-webhook-keys \
    --from-literal=secret-keys="{\"$(date +%Y-%m)\": \"$(openssl rand -base64 32)\"}"
else
  echo "exists, kept"
fi

log "Done. Next: helm upgrade --install taskhub charts/taskhub -n ${NAMESPACE} (see k8s/README.md)"
