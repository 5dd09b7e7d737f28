"""The Kubernetes shell of the failover operator (``leaderboard operator``, kopf).

Per ``PostgresCluster`` one kopf daemon runs the same loop as the local shell: observe (list
the cluster's pods, probe each over SQL), :func:`decide`, act, record. What differs is how the
actions are carried out and where the outcome is published:

- routing: the ``<cluster>-rw`` Service selects the pod labelled ``role=primary``, ``-ro`` the
  ``role=replica`` ones; the operator owns both Services and the labels. Taking the label off
  a primary is the first step of every fence, so routing moves before anything else;
- fencing: the old primary's pod is deleted at once (grace 0). Its StatefulSet recreates it
  and ``pg-member.sh`` (the same script the local stack uses) brings it back as a replica
  with pg_rewind. A node that keeps running a partitioned postgres cannot acknowledge writes
  either: no traffic reaches it, and its only synchronous standbys are re-pointed at once;
- replicas stream from the ``-rw`` Service, so re-pointing one is ending its walreceiver;
- a replica pod whose postgres container has not passed its startup probe (pg-member.sh may
  be rewinding or cloning it for minutes) is left to the kubelet, not fenced for not answering;
- ``<cluster>-app`` (Secret) holds the application's URI (host: the ``-rw`` Service);
- the CR's status (currentPrimary, targetPrimary, phase, failover count and time, members,
  conditions) and a Kubernetes Event for every decision that changed;
- one active operator per cluster: a Lease (:mod:`.lease`), not kopf peering.

The pods come from a StatefulSet (the chart's): stable names, a volume each, and a controller
that recreates a deleted pod, so the operator needs no right to create pods.
"""

from leaderboard.operator.kube.loop import KubeOperator, register
from leaderboard.operator.kube.shell import CLUSTER_LABEL, ROLE_LABEL, pod_address

__all__ = ["CLUSTER_LABEL", "ROLE_LABEL", "KubeOperator", "pod_address", "register"]
