package wal

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	changes      *prometheus.CounterVec
	transactions prometheus.Counter
	streamBlocks prometheus.Counter
	reconnects   prometheus.Counter
	replayed     prometheus.Counter
	guardLost    prometheus.Counter
	gaps         prometheus.Counter
	lag          prometheus.Gauge
	slotActive   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, slot string) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		changes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_wal_changes_total",
			Help: "Row changes to the sensitive tables decoded from committed transactions, by operation.",
		}, []string{"operation"}),
		transactions: f.NewCounter(prometheus.CounterOpts{
			Name: "pgtripwire_wal_transactions_total",
			Help: "Committed transactions decoded from the replication stream and handed over.",
		}),
		streamBlocks: f.NewCounter(prometheus.CounterOpts{
			Name: "pgtripwire_wal_stream_blocks_total",
			Help: "Blocks of large in-progress transactions streamed by the server before their commit or abort.",
		}),
		reconnects: f.NewCounter(prometheus.CounterOpts{
			Name: "pgtripwire_wal_reconnects_total",
			Help: "Replication sessions that failed and were started again after a backoff.",
		}),
		replayed: f.NewCounter(prometheus.CounterOpts{
			Name: "pgtripwire_wal_replayed_total",
			Help: "Transactions and messages received again after a restart, already handed over before it (their position was not yet confirmed to PostgreSQL), and skipped.",
		}),
		guardLost: f.NewCounter(prometheus.CounterOpts{
			Name: "pgtripwire_wal_replay_guard_lost_total",
			Help: "Times the replay guard could not be restored (damaged beyond its previous generation, or ahead of the server): changes not yet confirmed may be evaluated again.",
		}),
		gaps: f.NewCounter(prometheus.CounterOpts{
			Name: "pgtripwire_wal_decoding_gaps_total",
			Help: "Times the WAL source resumed from a slot past what it had dealt with (a slot created after a failover, or moved by someone else): changes committed in between were never decoded (event kind decoding_gap).",
		}),
		lag: f.NewGauge(prometheus.GaugeOpts{
			Name:        "pgtripwire_replication_lag_bytes",
			Help:        "WAL the server has sent or reported (keepalive WAL end) minus the position the detector confirmed.",
			ConstLabels: prometheus.Labels{"slot": slot},
		}),
		slotActive: f.NewGauge(prometheus.GaugeOpts{
			Name:        "pgtripwire_wal_slot_active",
			Help:        "1 while the detector streams from its replication slot, 0 otherwise.",
			ConstLabels: prometheus.Labels{"slot": slot},
		}),
	}
	for _, op := range []string{OperationInsert, OperationUpdate, OperationDelete, OperationTruncate} {
		m.changes.WithLabelValues(op)
	}
	return m
}
