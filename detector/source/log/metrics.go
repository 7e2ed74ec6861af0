package log

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics are the log source's own (the shared pgtripwire_source_* are the kit's).
// Labels are bounded: an origin, a transport, a kind from Kinds, a rotation reason.
type metrics struct {
	records         *prometheus.CounterVec
	malformed       *prometheus.CounterVec
	bytes           prometheus.Counter
	lag             prometheus.Gauge
	rotations       *prometheus.CounterVec
	events          *prometheus.CounterVec
	catalogErrors   prometheus.Counter
	syslogMessages  *prometheus.CounterVec
	syslogMalformed *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		records: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_log_records_total",
			Help: "Server log entries read, by origin (file, syslog).",
		}, []string{"origin"}),
		malformed: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_log_malformed_total",
			Help: "Server log entries skipped because they are not in the configured format (or over 32 MiB), by origin.",
		}, []string{"origin"}),
		bytes: f.NewCounter(prometheus.CounterOpts{
			Name: "pgtripwire_log_file_bytes_total",
			Help: "Bytes of log files read and handed over.",
		}),
		lag: f.NewGauge(prometheus.GaugeOpts{
			Name: "pgtripwire_log_file_lag_bytes",
			Help: "Bytes of the log file being read that are not read yet, at the last read.",
		}),
		rotations: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_log_rotations_total",
			Help: "Log file changes followed: new_file (the server moved to another file), truncated (copy-truncate: read again from the start), gone (the saved file was no longer there at start).",
		}, []string{"reason"}),
		events: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_log_events_total",
			Help: "Events the log source handed over, by kind.",
		}, []string{"kind"}),
		catalogErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "pgtripwire_log_catalog_errors_total",
			Help: "Failed loads of the catalog snapshot failed statements are classified against; meanwhile their verdicts are incomplete.",
		}),
		syslogMessages: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_log_syslog_messages_total",
			Help: "Syslog messages received, by transport (udp, tcp).",
		}, []string{"transport"}),
		syslogMalformed: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_log_syslog_malformed_total",
			Help: "Syslog messages or TCP streams that were not RFC 5424 (with RFC 6587 framing), by transport.",
		}, []string{"transport"}),
	}
	for _, o := range []string{originFile, originSyslog} {
		m.records.WithLabelValues(o)
		m.malformed.WithLabelValues(o)
	}
	for _, r := range []string{"new_file", "truncated", "gone"} {
		m.rotations.WithLabelValues(r)
	}
	for _, k := range Kinds {
		m.events.WithLabelValues(k)
	}
	for _, t := range []string{"udp", "tcp"} {
		m.syslogMessages.WithLabelValues(t)
		m.syslogMalformed.WithLabelValues(t)
	}
	return m
}

// Origins of records.
const (
	originFile   = "file"
	originSyslog = "syslog"
)
