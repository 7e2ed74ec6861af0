package log

import (
	"strconv"
	"strings"
	"time"
)

// Record is one entry of the server log, whatever format carried it. Its fields hold
// the server's text as written, literals included: a Record never leaves the package.
// Only the events built from it (events.go), with every value redacted, do.
type Record struct {
	// Time is when the server wrote the entry; zero when the format did not say or
	// the time zone could not be read.
	Time        time.Time
	User        string
	Database    string
	PID         int32
	Host        string // the client's address or host name, "[local]" for a Unix socket
	Application string
	BackendType string
	// Severity is the error severity as written (LOG, ERROR, FATAL, …).
	Severity string
	// SQLState is the five-character SQLSTATE, "" when unknown (stderr form without %e).
	SQLState string
	Message  string
	Detail   string
	Hint     string
	// Statement is the text of the statement that failed, when log_min_error_statement
	// let the server log it.
	Statement string
	QueryID   int64
}

// clientAddr is the event's client address: "local" for a Unix socket (as the other
// sources say it), the host otherwise.
func (r *Record) clientAddr() string {
	switch r.Host {
	case "[local]":
		return "local"
	case "":
		return ""
	}
	return r.Host
}

// parseLogTime reads the server's log timestamps: "2024-05-01 10:26:36.370 UTC" (ms,
// jsonlog/csvlog/%m), with seconds only (%t), or with microseconds (%n is epoch: see
// stderr.go). The zone is log_timezone's abbreviation: UTC/GMT and numeric offsets
// (+03, -0530) are exact; another abbreviation is taken from the detector's local zone
// when it knows it at that time, and otherwise the time is unknown (zero): a wrong time
// is worse than none, and the event is stamped on receipt instead.
func parseLogTime(s string) time.Time {
	i := strings.LastIndexByte(s, ' ')
	if i < 0 {
		return time.Time{}
	}
	clock, zone := s[:i], s[i+1:]
	var loc *time.Location
	switch {
	case zone == "UTC" || zone == "GMT" || zone == "Z":
		loc = time.UTC
	case len(zone) >= 3 && (zone[0] == '+' || zone[0] == '-'):
		off, ok := numericZone(zone[1:])
		if !ok {
			return time.Time{}
		}
		if zone[0] == '-' {
			off = -off
		}
		loc = time.FixedZone(zone, off)
	default:
		loc = time.Local
	}
	t, err := time.ParseInLocation("2006-01-02 15:04:05.999999999", clock, loc)
	if err != nil {
		return time.Time{}
	}
	if loc == time.Local {
		if name, _ := t.Zone(); name != zone {
			return time.Time{}
		}
	}
	return t
}

// numericZone reads hh, hhmm or hh:mm into seconds east of UTC.
func numericZone(s string) (int, bool) {
	s = strings.ReplaceAll(s, ":", "")
	if len(s) != 2 && len(s) != 4 {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, false
	}
	if len(s) == 2 {
		return n * 3600, true
	}
	return (n/100)*3600 + (n%100)*60, true
}
