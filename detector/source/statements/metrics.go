package statements

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	entries          prometheus.Gauge
	hidden           prometheus.Gauge
	textsFetched     prometheus.Counter
	textsMissing     prometheus.Counter
	catalogErrors    prometheus.Counter
	evictions        prometheus.Counter
	resets           prometheus.Counter
	incomplete       prometheus.Counter
	catalogRelations prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		entries: f.NewGauge(prometheus.GaugeOpts{
			Name: "pgtripwire_statements_entries",
			Help: "pg_stat_statements entries of the monitored database at the last poll.",
		}),
		hidden: f.NewGauge(prometheus.GaugeOpts{
			Name: "pgtripwire_statements_hidden_entries",
			Help: "pg_stat_statements entries of other roles hidden from the detector's role (it lacks pg_read_all_stats).",
		}),
		textsFetched: f.NewCounter(prometheus.CounterOpts{
			Name: "pgtripwire_statements_texts_fetched_total",
			Help: "Statement texts fetched, one per queryid not seen before.",
		}),
		textsMissing: f.NewCounter(prometheus.CounterOpts{
			Name: "pgtripwire_statements_texts_missing_total",
			Help: "Statements whose text the server did not return after several attempts; classified as incomplete.",
		}),
		catalogErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "pgtripwire_catalog_refresh_errors_total",
			Help: "Catalog refreshes that failed; the previous snapshot stays in use.",
		}),
		evictions: f.NewCounter(prometheus.CounterOpts{
			Name: "pgtripwire_statements_evictions_total",
			Help: "pg_stat_statements entries evicted (pg_stat_statements_info.dealloc growth); reads may be missed.",
		}),
		resets: f.NewCounter(prometheus.CounterOpts{
			Name: "pgtripwire_statements_resets_total",
			Help: "pg_stat_statements resets observed.",
		}),
		incomplete: f.NewCounter(prometheus.CounterOpts{
			Name: "pgtripwire_classify_incomplete_total",
			Help: "Statements that could not be fully classified (truncated or missing text, unknown relations).",
		}),
		catalogRelations: f.NewGauge(prometheus.GaugeOpts{
			Name: "pgtripwire_catalog_relations",
			Help: "Relations in the catalog snapshot used to classify statements.",
		}),
	}
}
