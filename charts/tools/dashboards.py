#!/usr/bin/env python3
"""Thicket's Grafana dashboards, built with the Grafana Foundation SDK (its typed builders are
generated from Grafana's own schema).

    python charts/tools/dashboards.py            # writes charts/thicket-operator/dashboards/*.json
    python charts/tools/dashboards.py --check    # fails when a file is stale or does not
                                                 # decode as a Grafana dashboard of the schema

Needs `pip install -r charts/tools/requirements.txt` (the e2e tests make a venv for it).

Replica series carry `namespace`, `subnet` and `pod` labels (added by the chart's PodMonitor or
by files/prometheus/scrape-configs.yaml); the operator's carry `namespace` and `pod`.
"""

import enum
import json
import pathlib
import sys
import typing

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.builders import stat
from grafana_foundation_sdk.builders import timeseries
from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog import runtime
from grafana_foundation_sdk.cog import variants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

OUT = pathlib.Path(__file__).resolve().parent.parent / "thicket-operator" / "dashboards"

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Label selectors the template variables fill in.
SUBNET = 'namespace="$namespace", subnet="$subnet"'
REPLICA = 'namespace="$namespace", subnet="$subnet", pod="$replica"'
OPERATOR = 'namespace="$namespace"'


def datasource_variable():
    return (
        dash.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .regex("")
    )


def query_variable(name, label, query):
    """A variable listing a label's values, newest first on every dashboard load."""
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query({"query": query, "refId": f"{name}-values", "qryType": 1})
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
    )


def target(expr, legend="", ref="A"):
    return (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend or "__auto")
        .ref_id(ref)
        .range()
    )


def graph(title, description, unit, *queries, stack=False, width=12, height=8, min_zero=True):
    """A time series panel; `queries` are (expr, legend) pairs."""
    p = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .line_width(1)
        .fill_opacity(10 if not stack else 40)
        .show_points(common.VisibilityMode.NEVER)
        .legend(
            common_b.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(common_b.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING))
    )
    if min_zero:
        p = p.min(0)
    if stack:
        p = p.stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL))
    for i, (expr, legend) in enumerate(queries):
        p = p.with_target(target(expr, legend, chr(ord("A") + i)))
    return p


def single(title, description, unit, expr, width=4, thresholds=None):
    """A stat panel showing the last value of one query."""
    steps = thresholds or [model.Threshold(value=None, color="green")]
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(4)
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(dash.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(steps))
        .with_target(target(expr, "", "A").instant())
    )


def quantiles(metric, selector, by="", qs=(0.5, 0.9, 0.99)):
    """histogram_quantile queries of `metric` at the quantiles `qs`, optionally split `by`."""
    group = f"le, {by}" if by else "le"
    split = f"{{{{{by}}}}} " if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
            f"{split}p{int(q * 100)}",
        )
        for q in qs
    ]


def base(uid, title, description, variables, tags=("thicket",)):
    d = (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(list(tags))
        .editable()
        .timezone("browser")
        .time("now-1h", "now")
        .refresh("30s")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_variable())
    )
    for v in variables:
        d = d.with_variable(v)
    return d


NAMESPACE_VAR = query_variable(
    "namespace", "Namespace", "label_values(thicket_consensus_finalized_height, namespace)"
)
SUBNET_VAR = query_variable(
    "subnet",
    "Subnet",
    'label_values(thicket_consensus_finalized_height{namespace="$namespace"}, subnet)',
)
REPLICA_VAR = query_variable(
    "replica",
    "Replica",
    f"label_values(thicket_consensus_finalized_height{{{SUBNET}}}, pod)",
)


def subnet_overview():
    d = base(
        "thicket-subnet",
        "Thicket / Subnet",
        "One subnet: finalization, block time, consensus, DKG and membership, replica health, ingress and calls.",
        [NAMESPACE_VAR, SUBNET_VAR],
    )
    d = (
        d.with_row(dash.Row("Summary"))
        .with_panel(single("Finalized height", "Highest finalized height of the subnet's replicas.", "none",
                           f"max(thicket_consensus_finalized_height{{{SUBNET}}})"))
        .with_panel(single("Blocks per second", "Blocks finalized per second (the fastest replica).", "none",
                           f"max(rate(thicket_consensus_blocks_finalized_total{{{SUBNET}}}[$__rate_interval]))"))
        .with_panel(single("Healthy replicas", "Replicas scraped and ready (finalizing, with a certified state); consensus needs n - f of the n members.", "none",
                           f"sum(thicket_replica_ready{{{SUBNET}}})"))
        .with_panel(single("Members", "Nodes in the registry version in force.", "none",
                           f"max(thicket_subnet_members{{{SUBNET}}})"))
        .with_panel(single("DKG epoch", "Summary height of the key epoch in force.", "none",
                           f"max(thicket_dkg_epoch{{{SUBNET}}})"))
        .with_panel(single("Registry version", "Registry version in force (each membership change adds one).", "none",
                           f"max(thicket_registry_version{{{SUBNET}}})"))
    )
    d = (
        d.with_row(dash.Row("Finalization"))
        .with_panel(graph("Finalized height", "Finalized height of each replica: a line that flattens is a replica falling behind.", "none",
                          (f"thicket_consensus_finalized_height{{{SUBNET}}}", "{{pod}}"), min_zero=False))
        .with_panel(graph("Block rate", "Blocks finalized per second, per replica.", "none",
                          (f"rate(thicket_consensus_blocks_finalized_total{{{SUBNET}}}[$__rate_interval])", "{{pod}}")))
        .with_panel(graph("Block time", "Time between successive finalized heights, all replicas.", "s",
                          *quantiles("thicket_consensus_block_time_seconds", SUBNET)))
        .with_panel(graph("Finalization latency", "From the start of a height's round to its finalization, all replicas.", "s",
                          *quantiles("thicket_consensus_finalization_latency_seconds", SUBNET)))
        .with_panel(graph("Round duration", "From the start of a round to the notarization of its height.", "s",
                          *quantiles("thicket_consensus_round_duration_seconds", SUBNET)))
        .with_panel(graph("Notarization rank", "Rank of the finalized blocks' makers: 0 when the first-ranked maker's block wins; higher means makers were slow or absent.", "none",
                          (f"sum(rate(thicket_consensus_finalized_block_rank_sum{{{SUBNET}}}[$__rate_interval])) / sum(rate(thicket_consensus_finalized_block_rank_count{{{SUBNET}}}[$__rate_interval]))", "mean rank"),
                          (f"histogram_quantile(0.99, sum by (le) (rate(thicket_consensus_finalized_block_rank_bucket{{{SUBNET}}}[$__rate_interval])))", "p99 rank")))
    )
    d = (
        d.with_row(dash.Row("DKG and membership"))
        .with_panel(graph("DKG epoch", "Summary height of each replica's key epoch; it moves every DKG interval.", "none",
                          (f"thicket_dkg_epoch{{{SUBNET}}}", "{{pod}}"), min_zero=False))
        .with_panel(graph("Key epochs and reshares", "DKG epochs begun, those that reshared the subnet key to a new membership, and those whose DKG failed (keys kept), per hour.", "none",
                          (f"max(increase(thicket_dkg_epochs_total{{{SUBNET}}}[1h]))", "epochs"),
                          (f"max(increase(thicket_dkg_reshares_total{{{SUBNET}}}[1h]))", "reshares"),
                          (f"max(increase(thicket_dkg_failures_total{{{SUBNET}}}[1h]))", "failed DKGs")))
        .with_panel(graph("DKG and reshare progress", "DKG intervals failed in a row, and summaries a registry change has waited (1 is normal right after a change).", "none",
                          (f"max(thicket_dkg_failed_intervals{{{SUBNET}}})", "failed intervals in a row"),
                          (f"max(thicket_dkg_pending_change_epochs{{{SUBNET}}})", "epochs a change waits")))
        .with_panel(graph("Membership", "Registry members, replicas scraped, and replicas ready.", "none",
                          (f"max(thicket_subnet_members{{{SUBNET}}})", "members"),
                          (f"count(up{{{SUBNET}}})", "replicas scraped"),
                          (f"sum(up{{{SUBNET}}})", "replicas up"),
                          (f"sum(thicket_replica_ready{{{SUBNET}}})", "replicas ready")))
        .with_panel(graph("Registry versions", "Registry version in force and the one pending (a membership change ordered, not yet in force).", "none",
                          (f"max(thicket_registry_version{{{SUBNET}}})", "in force"),
                          (f"max(thicket_registry_pending_version{{{SUBNET}}})", "pending")))
    )
    d = (
        d.with_row(dash.Row("Replica health"))
        .with_panel(graph("Replicas ready", "1 when the replica finalizes and has a certified state.", "none",
                          (f"thicket_replica_ready{{{SUBNET}}}", "{{pod}}"), stack=True))
        .with_panel(graph("Certification lag", "Heights between the subnet's finalized tip and its newest certified state.", "none",
                          (f"max(thicket_consensus_finalized_height{{{SUBNET}}}) - max(thicket_certification_height{{{SUBNET}}})", "lag")))
        .with_panel(graph("Behind the subnet", "Finalized heights each replica is behind the highest one.", "none",
                          (f"max(thicket_consensus_finalized_height{{{SUBNET}}}) - on () group_right () thicket_consensus_finalized_height{{{SUBNET}}}", "{{pod}}")))
        .with_panel(graph("Peers connected", "Peers that answered each replica's last push.", "none",
                          (f"thicket_p2p_peers_connected{{{SUBNET}}}", "{{pod}}")))
        .with_panel(graph("Invalid artifacts", "Consensus artifacts refused as invalid, by kind: a Byzantine or misconfigured peer.", "ops",
                          (f"sum by (kind) (rate(thicket_p2p_artifacts_invalid_total{{{SUBNET}}}[$__rate_interval]))", "{{kind}}")))
    )
    d = (
        d.with_row(dash.Row("Ingress and calls"))
        .with_panel(graph("Ingress", "Update calls accepted over HTTP, refused (by reason), and executed, per second (all replicas).", "reqps",
                          (f"sum(rate(thicket_ingress_accepted_total{{{SUBNET}}}[$__rate_interval]))", "accepted"),
                          (f"sum by (reason) (rate(thicket_ingress_refused_total{{{SUBNET}}}[$__rate_interval]))", "refused: {{reason}}"),
                          (f"max(rate(thicket_ingress_executed_total{{{SUBNET}}}[$__rate_interval]))", "executed")))
        .with_panel(graph("Requests by endpoint", "HTTP requests of the IC interface per second, by endpoint.", "reqps",
                          (f"sum by (endpoint) (rate(thicket_http_request_duration_seconds_count{{{SUBNET}}}[$__rate_interval]))", "{{endpoint}}")))
        .with_panel(graph("Update call latency", "Sync update calls (/api/v3 call), accepted to certified answer.", "s",
                          *quantiles("thicket_http_request_duration_seconds", SUBNET + ', endpoint="call_sync"')))
        .with_panel(graph("Query latency", "Query calls, by quantile.", "s",
                          *quantiles("thicket_http_request_duration_seconds", SUBNET + ', endpoint="query"')))
    )
    return d


def replica_detail():
    d = base(
        "thicket-replica",
        "Thicket / Replica",
        "One replica in detail: heights, catch-up and state sync, peers and artifacts, latencies.",
        [NAMESPACE_VAR, SUBNET_VAR, REPLICA_VAR],
    )
    d = (
        d.with_row(dash.Row("Heights"))
        .with_panel(graph("Heights", "Notarized, finalized, executed and certified heights, and the catch-up package the replica runs from.", "none",
                          (f"thicket_consensus_notarized_height{{{REPLICA}}}", "notarized"),
                          (f"thicket_consensus_finalized_height{{{REPLICA}}}", "finalized"),
                          (f"thicket_execution_height{{{REPLICA}}}", "executed"),
                          (f"thicket_certification_height{{{REPLICA}}}", "certified"),
                          (f"thicket_consensus_catch_up_height{{{REPLICA}}}", "catch-up package"), min_zero=False))
        .with_panel(graph("Behind the subnet", "Finalized heights this replica is behind the subnet's highest; certification behind finalization.", "none",
                          (f"max(thicket_consensus_finalized_height{{{SUBNET}}}) - on () thicket_consensus_finalized_height{{{REPLICA}}}", "finalization"),
                          (f"thicket_consensus_finalized_height{{{REPLICA}}} - thicket_certification_height{{{REPLICA}}}", "certification lag")))
        .with_panel(graph("Block time and round duration", "This replica's view of the subnet's pace.", "s",
                          (f"histogram_quantile(0.5, sum by (le) (rate(thicket_consensus_block_time_seconds_bucket{{{REPLICA}}}[$__rate_interval])))", "block time p50"),
                          (f"histogram_quantile(0.99, sum by (le) (rate(thicket_consensus_block_time_seconds_bucket{{{REPLICA}}}[$__rate_interval])))", "block time p99"),
                          (f"histogram_quantile(0.5, sum by (le) (rate(thicket_consensus_round_duration_seconds_bucket{{{REPLICA}}}[$__rate_interval])))", "round p50"),
                          (f"histogram_quantile(0.99, sum by (le) (rate(thicket_consensus_finalization_latency_seconds_bucket{{{REPLICA}}}[$__rate_interval])))", "finalization latency p99")))
        .with_panel(graph("Ready", "1 when the replica finalizes and has a certified state (its /readyz).", "none",
                          (f"thicket_replica_ready{{{REPLICA}}}", "ready"), (f"up{{{REPLICA}}}", "scraped")))
    )
    d = (
        d.with_row(dash.Row("Catch-up and state sync"))
        .with_panel(graph("State sync", "1 while a state sync from peers is under way; states installed and chunks fetched per minute.", "none",
                          (f"thicket_state_sync_in_progress{{{REPLICA}}}", "in progress"),
                          (f"increase(thicket_state_syncs_total{{{REPLICA}}}[5m])", "states installed (5m)"),
                          (f"rate(thicket_state_sync_chunks_total{{{REPLICA}}}[$__rate_interval]) * 60", "chunks/min")))
        .with_panel(graph("DKG epoch and registry", "The key epoch in force, and membership changes waiting for it.", "none",
                          (f"thicket_dkg_epoch{{{REPLICA}}}", "epoch (summary height)"),
                          (f"thicket_dkg_pending_change_epochs{{{REPLICA}}}", "epochs a change has waited")))
    )
    d = (
        d.with_row(dash.Row("Peers and artifacts"))
        .with_panel(graph("Peers connected", "Peers that answered the last push.", "none",
                          (f"thicket_p2p_peers_connected{{{REPLICA}}}", "peers")))
        .with_panel(graph("Artifacts received", "Consensus artifacts received from peers per second, by kind.", "ops",
                          (f"sum by (kind) (rate(thicket_p2p_artifacts_received_total{{{REPLICA}}}[$__rate_interval]))", "{{kind}}"), stack=True))
        .with_panel(graph("Artifacts refused", "Invalid artifacts by kind; arrivals dropped because the pool was full or a peer exceeded its rate; TLS handshakes refused.", "ops",
                          (f"sum by (kind) (rate(thicket_p2p_artifacts_invalid_total{{{REPLICA}}}[$__rate_interval]))", "invalid {{kind}}"),
                          (f"rate(thicket_p2p_artifacts_dropped_total{{{REPLICA}}}[$__rate_interval])", "dropped (pool full)"),
                          (f"sum(rate(thicket_p2p_artifacts_rate_limited_total{{{REPLICA}}}[$__rate_interval]))", "rate-limited"),
                          (f"rate(thicket_p2p_tls_refused_total{{{REPLICA}}}[$__rate_interval])", "TLS refused")))
    )
    d = (
        d.with_row(dash.Row("HTTP interface"))
        .with_panel(graph("Requests", "Requests per second by endpoint and status class.", "reqps",
                          (f"sum by (endpoint, status) (rate(thicket_http_request_duration_seconds_count{{{REPLICA}}}[$__rate_interval]))", "{{endpoint}} {{status}}")))
        .with_panel(graph("Latency p99", "99th percentile of request duration by endpoint.", "s",
                          (f"histogram_quantile(0.99, sum by (le, endpoint) (rate(thicket_http_request_duration_seconds_bucket{{{REPLICA}}}[$__rate_interval])))", "{{endpoint}}")))
        .with_panel(graph("Ingress refused", "Update calls refused, by reason.", "reqps",
                          (f"sum by (reason) (rate(thicket_ingress_refused_total{{{REPLICA}}}[$__rate_interval]))", "{{reason}}")))
        .with_panel(graph("Ingress", "Update calls accepted here, and executed in finalized blocks.", "reqps",
                          (f"rate(thicket_ingress_accepted_total{{{REPLICA}}}[$__rate_interval])", "accepted"),
                          (f"rate(thicket_ingress_executed_total{{{REPLICA}}}[$__rate_interval])", "executed")))
    )
    return d


def canisters():
    d = base(
        "thicket-canisters",
        "Thicket / Canisters",
        "The canisters of one subnet: calls, instructions, memory and traps (replicated execution is the same on every replica, so the highest replica is shown).",
        [NAMESPACE_VAR, SUBNET_VAR],
    )
    d = (
        d.with_row(dash.Row("Canisters"))
        .with_panel(single("Canisters", "Canisters on the subnet.", "none", f"max(thicket_canisters{{{SUBNET}}})"))
        .with_panel(single("Heap memory", "Wasm heap memory of all canisters.", "bytes", f"max(thicket_canister_memory_bytes{{{SUBNET}}})"))
        .with_panel(single("Stable memory", "Stable memory of all canisters.", "bytes", f"max(thicket_canister_stable_memory_bytes{{{SUBNET}}})"))
        .with_panel(single("Messages per second", "Update messages (replicated: the fastest replica's count) and queries (each on one replica: summed) executed per second.", "ops",
                           f"max(rate(thicket_execution_messages_total{{{SUBNET}, kind=\"update\"}}[$__rate_interval])) + sum(rate(thicket_execution_messages_total{{{SUBNET}, kind=\"query\"}}[$__rate_interval]))"))
        .with_panel(single("Instructions per second", "Wasm instructions executed per second in replicated execution.", "short",
                           f"max(rate(thicket_execution_instructions_total{{{SUBNET}}}[$__rate_interval]))"))
        .with_panel(single("Trap ratio", "Share of update messages that ended in a canister error (a trap), as the ThicketCanisterTrapping alert counts them.", "percentunit",
                           f"max(rate(thicket_execution_rejects_total{{{SUBNET}, kind=\"update\", reject_code=\"canister_error\"}}[$__rate_interval])) / max(rate(thicket_execution_messages_total{{{SUBNET}, kind=\"update\"}}[$__rate_interval]))"))
    )
    d = (
        d.with_row(dash.Row("Calls"))
        .with_panel(graph("Messages executed", "Messages executed per second by kind: update (replicated) and query (on one replica each; summed).", "ops",
                          (f"max(rate(thicket_execution_messages_total{{{SUBNET}, kind=\"update\"}}[$__rate_interval]))", "update"),
                          (f"sum(rate(thicket_execution_messages_total{{{SUBNET}, kind=\"query\"}}[$__rate_interval]))", "query")))
        .with_panel(graph("Rejects by reject code", "Messages rejected per second, by IC reject code (canister_error: the canister trapped); updates are replicated (the fastest replica's count), queries run on one replica each (summed).", "ops",
                          (f"max by (reject_code) (rate(thicket_execution_rejects_total{{{SUBNET}, kind=\"update\"}}[$__rate_interval]))", "update {{reject_code}}"),
                          (f"sum by (reject_code) (rate(thicket_execution_rejects_total{{{SUBNET}, kind=\"query\"}}[$__rate_interval]))", "query {{reject_code}}")))
        .with_panel(graph("Instructions", "Wasm instructions per second in replicated execution.", "short",
                          (f"max(rate(thicket_execution_instructions_total{{{SUBNET}}}[$__rate_interval]))", "instructions")))
        .with_panel(graph("Call latency", "Update (sync call) and query latency, p50 and p99.", "s",
                          *quantiles("thicket_http_request_duration_seconds", SUBNET + ', endpoint=~"call_sync|query"', by="endpoint", qs=(0.5, 0.99))))
    )
    d = (
        d.with_row(dash.Row("Memory"))
        .with_panel(graph("Canister memory", "Heap and stable memory of all canisters.", "bytes",
                          (f"max(thicket_canister_memory_bytes{{{SUBNET}}})", "heap"),
                          (f"max(thicket_canister_stable_memory_bytes{{{SUBNET}}})", "stable"), stack=True))
        .with_panel(graph("Canister count", "Canisters on the subnet.", "none",
                          (f"max(thicket_canisters{{{SUBNET}}})", "canisters")))
    )
    return d


def operator():
    d = base(
        "thicket-operator",
        "Thicket / Operator",
        "The Thicket operator: reconciles, errors, durations, subnets by phase and reconfigurations in flight.",
        [query_variable("namespace", "Namespace", "label_values(thicket_operator_reconciles_total, namespace)")],
    )
    d = (
        d.with_row(dash.Row("Operator"))
        .with_panel(single("Subnets running", "Subnets in phase Running.", "none",
                           f'sum(thicket_operator_subnets{{{OPERATOR}, phase="Running"}})'))
        .with_panel(single("Subnets degraded or failed", "Subnets in phase Degraded or Failed.", "none",
                           f'sum(thicket_operator_subnets{{{OPERATOR}, phase=~"Degraded|Failed"}})',
                           thresholds=[model.Threshold(value=None, color="green"), model.Threshold(value=1, color="red")]))
        .with_panel(single("Reconfigurations in flight", "Subnets with a membership operation under way.", "none",
                           f"sum(thicket_operator_reconfiguration_steps_in_flight{{{OPERATOR}}})"))
        .with_panel(single("Failing objects", "Subnets and Canisters whose last reconcile failed.", "none",
                           f"sum(thicket_operator_failing_objects{{{OPERATOR}}})",
                           thresholds=[model.Threshold(value=None, color="green"), model.Threshold(value=1, color="orange")]))
        .with_panel(graph("Reconciles", "Reconciles per second by controller.", "ops",
                          (f"sum by (controller) (rate(thicket_operator_reconciles_total{{{OPERATOR}}}[$__rate_interval]))", "{{controller}}")))
        .with_panel(graph("Reconcile errors", "Failed reconciles per second by controller and reason.", "ops",
                          (f"sum by (controller, reason) (rate(thicket_operator_reconcile_errors_total{{{OPERATOR}}}[$__rate_interval]))", "{{controller}}: {{reason}}")))
        .with_panel(graph("Reconcile duration", "p50 and p99 by controller.", "s",
                          *quantiles("thicket_operator_reconcile_duration_seconds", OPERATOR, by="controller", qs=(0.5, 0.99))))
        .with_panel(graph("Subnets by phase", "Subnets the operator manages, by phase.", "none",
                          (f"sum by (phase) (thicket_operator_subnets{{{OPERATOR}}})", "{{phase}}"), stack=True))
        .with_panel(graph("Failing objects", "Objects whose last reconcile failed, by controller; operator pods scraped.", "none",
                          (f"sum by (controller) (thicket_operator_failing_objects{{{OPERATOR}}})", "{{controller}}"),
                          (f'sum(up{{{OPERATOR}, pod=~".*operator.*"}})', "operator pods up")))
    )
    return d


DASHBOARDS = {
    "thicket-subnet.json": subnet_overview,
    "thicket-replica.json": replica_detail,
    "thicket-canisters.json": canisters,
    "thicket-operator.json": operator,
}


def render(builder):
    return json.dumps(builder.build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def type_errors(value, hint, where):
    """Where `value` (decoded by the SDK's from_json, which does not check types) does not
    have the type the schema gives: enums, literals, scalars, lists, maps, nested models."""
    if hint is typing.Any or hint is object:
        # Panel options and custom field config: the panel type's own model, when decoded.
        return model_errors(value, where) if hasattr(type(value), "from_json") else []
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return []
        results = [type_errors(value, a, where) for a in args if a is not type(None)]
        return [] if any(not r for r in results) else min(results, key=len)
    if origin is typing.Literal:
        return [] if value in args else [f"{where}: {value!r} is not one of {list(args)}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {value!r}"]
        return [e for i, v in enumerate(value) for e in type_errors(v, args[0], f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: expected a map, got {value!r}"]
        return [e for k, v in value.items() for e in type_errors(v, args[1], f"{where}.{k}")]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = [m.value for m in hint]
        v = value.value if isinstance(value, enum.Enum) else value
        return [] if v in allowed else [f"{where}: {value!r} is not one of {allowed}"]
    if hint is bool:
        return [] if isinstance(value, bool) else [f"{where}: expected a boolean, got {value!r}"]
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{where}: expected a number, got {value!r}"]
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{where}: expected an integer, got {value!r}"]
    if hint is str:
        return [] if isinstance(value, str) else [f"{where}: expected a string, got {value!r}"]
    if isinstance(hint, type) and issubclass(hint, variants.Dataquery):
        if isinstance(value, runtime.UnknownDataquery):
            return [f"{where}: a query of no known data source type"]
        return model_errors(value, where)
    if isinstance(hint, type) and hasattr(hint, "from_json"):
        if not isinstance(value, hint):
            return [f"{where}: expected {hint.__name__}, got {value!r}"]
        return model_errors(value, where)
    return []


def model_errors(obj, where):
    hints = typing.get_type_hints(type(obj))
    errors = []
    for attr, hint in hints.items():
        value = getattr(obj, attr, None)
        if attr == "options" and isinstance(obj, model.Panel):
            config = runtime.panelcfg_config(obj.type_val)
            if config is not None and config.options_from_json_hook is not None:
                hint = typing.Any if value is None else type(value)
        errors.extend(type_errors(value, hint, f"{where}.{attr}"))
    return errors


def validate(name, text):
    """Checks a dashboard against Grafana's schema as the SDK's models (generated from it)
    state it: the file decodes and encodes back to the same JSON (no unknown or misplaced
    field), every field has its type (enums, literals, numbers, nested objects), every panel
    is of a known type, every query a Prometheus query on the ${datasource} variable."""
    errors = []
    data = json.loads(text)
    decoded = model.Dashboard.from_json(data)
    again = json.loads(json.dumps(decoded, cls=JSONEncoder))
    if again != data:
        errors.append(f"{name}: does not round-trip through the Grafana schema model")
    errors.extend(f"{name}: {e}" for e in model_errors(decoded, "dashboard"))
    variables = {v["name"] for v in data.get("templating", {}).get("list", [])}
    for panel in data.get("panels", []):
        if panel.get("type") == "row":
            continue
        title = panel.get("title", "?")
        if runtime.panelcfg_config(panel.get("type", "")) is None:
            errors.append(f"{name}: panel {title!r} is of no known panel type {panel.get('type')!r}")
        if panel.get("datasource") != {"type": "prometheus", "uid": "${datasource}"}:
            errors.append(f"{name}: panel {title!r} does not use the datasource variable")
        if not panel.get("targets"):
            errors.append(f"{name}: panel {title!r} has no query")
        for t in panel.get("targets", []):
            expr = t.get("expr", "")
            if not expr:
                errors.append(f"{name}: panel {title!r} has an empty query")
            for var in ("namespace", "subnet", "replica"):
                if f"${var}" in expr and var not in variables:
                    errors.append(f"{name}: panel {title!r} uses ${var}, which is not a variable")
    return errors


def main():
    check = "--check" in sys.argv[1:]
    plugins.register_default_plugins()
    errors = []
    OUT.mkdir(parents=True, exist_ok=True)
    for name, build in DASHBOARDS.items():
        text = render(build())
        path = OUT / name
        if check:
            current = path.read_text() if path.exists() else ""
            if current != text:
                errors.append(f"{path} is stale: run python charts/tools/dashboards.py")
            errors.extend(validate(name, current or text))
        else:
            path.write_text(text)
            errors.extend(validate(name, text))
    stray = {p.name for p in OUT.glob("*.json")} - set(DASHBOARDS)
    errors.extend(f"{OUT / s} is not generated by this script" for s in sorted(stray))
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"{len(DASHBOARDS)} dashboards {'checked' if check else 'written'} in {OUT}")


if __name__ == "__main__":
    main()
