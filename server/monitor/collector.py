"""``/metrics`` carries the fleet figures the admin API serves, from the same rollups.

A Prometheus collector reads the cached rollups (never the database): the monitor's loop
keeps them at most ``fleet_refresh_s`` old. Task-level figures come from the shared
database, so in distributed mode every API replica exports the same values: aggregate
them with ``max``, not ``sum``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from server.fleet.views import cost_doc, latest_gap, tier_table
from server.monitor.service import Monitor
from server.monitor.snapshots import LiveHub


class FleetCollector(Collector):
    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        monitor = self._monitor
        energy = GaugeMetricFamily(
            "asyncfl_task_energy_joules",
            "Training energy of applied updates: reported by devices or estimated",
            labels=["task", "source"],
        )
        co2e = GaugeMetricFamily(
            "asyncfl_task_co2e_grams",
            "CO2e of the training energy at the grid intensity",
            labels=["task"],
        )
        train = GaugeMetricFamily(
            "asyncfl_task_train_seconds", "Training seconds devices reported", labels=["task"]
        )
        traffic = GaugeMetricFamily(
            "asyncfl_task_bytes",
            "Bytes of applied updates: up (uploads), down (fetched)",
            labels=["task", "direction"],
        )
        tier_updates = GaugeMetricFamily(
            "asyncfl_tier_updates", "Applied updates by device tier", labels=["task", "tier"]
        )
        tier_devices = GaugeMetricFamily(
            "asyncfl_tier_devices", "Devices that contributed, by tier", labels=["task", "tier"]
        )
        tier_staleness = GaugeMetricFamily(
            "asyncfl_tier_mean_staleness",
            "Mean staleness of applied updates by tier",
            labels=["task", "tier"],
        )
        tier_accuracy = GaugeMetricFamily(
            "asyncfl_tier_federated_accuracy",
            "Federated-evaluation accuracy by tier (newest versions)",
            labels=["task", "tier"],
        )
        tier_energy = GaugeMetricFamily(
            "asyncfl_tier_energy_joules", "Training energy by tier", labels=["task", "tier"]
        )
        fairness = GaugeMetricFamily(
            "asyncfl_task_tier_accuracy_gap",
            "Best minus worst tier's federated accuracy over the newest versions",
            labels=["task"],
        )
        for task_id, rollup in sorted(monitor.rollups.rollups.items()):
            total = cost_doc(rollup)["total"]
            energy.add_metric([task_id, "reported"], total["energy_reported_j"])
            energy.add_metric([task_id, "estimated"], total["energy_estimated_j"])
            co2e.add_metric([task_id], total["co2e_g"])
            train.add_metric([task_id], total["train_s"])
            traffic.add_metric([task_id, "up"], total["bytes_up"])
            traffic.add_metric([task_id, "down"], total["bytes_down"])
            for row in tier_table(rollup, monitor.rollups.enrolled):
                labels = [task_id, row["tier"]]
                tier_updates.add_metric(labels, row["updates"])
                tier_devices.add_metric(labels, row["devices"])
                tier_energy.add_metric(labels, row["energy_j"])
                if row["mean_staleness"] is not None:
                    tier_staleness.add_metric(labels, row["mean_staleness"])
                if row["federated"] is not None and row["federated"]["accuracy"] is not None:
                    tier_accuracy.add_metric(labels, row["federated"]["accuracy"])
            newest_gap = latest_gap(rollup)
            if newest_gap is not None:
                fairness.add_metric([task_id], newest_gap["gap"])
        cpu = CounterMetricFamily(
            "asyncfl_dashboard_cpu_seconds",
            "CPU the dashboard's figures cost, by part: admin documents, rollup refreshes "
            "(event loop and the database driver's thread), check-in folds, live "
            "snapshots, stream writes",
            labels=["part"],
        )
        for part, seconds in sorted(monitor.meter.parts.items()):
            cpu.add_metric([part], seconds)
        refreshes = CounterMetricFamily(
            "asyncfl_dashboard_refreshes", "Rollup refreshes (database reads) of any task"
        )
        refreshes.add_metric([], monitor.rollups.refreshes)
        yield from (energy, co2e, train, traffic, tier_updates, tier_devices, tier_staleness)
        yield from (tier_accuracy, tier_energy, fairness, cpu, refreshes)


class LiveCollector(Collector):
    """The live snapshots: built, written to streams, streams open."""

    def __init__(self, hub: LiveHub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        snapshots = CounterMetricFamily(
            "asyncfl_dashboard_snapshots", "Live snapshots built (one per change per task)"
        )
        snapshots.add_metric([], self._hub.snapshots)
        frames = CounterMetricFamily(
            "asyncfl_dashboard_stream_frames", "Snapshots and keepalives written to streams"
        )
        frames.add_metric([], self._hub.frames)
        streams = GaugeMetricFamily("asyncfl_dashboard_streams", "Live streams open")
        streams.add_metric([], self._hub.streams)
        yield from (snapshots, frames, streams)
