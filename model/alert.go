package model

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
	"time"
)

// State is where an alert is in its lifecycle. Only firing and resolved transitions
// are written to the log.
type State string

// Alert states.
const (
	StatePending  State = "pending"
	StateFiring   State = "firing"
	StateResolved State = "resolved"
)

// Severity of a rule, as the alert contract names it.
type Severity string

// Severities.
const (
	SeverityCritical Severity = "critical"
	SeverityWarning  Severity = "warning"
	SeverityInfo     Severity = "info"
)

// Label names of the alert contract. Labels whose value is unknown are omitted.
const (
	LabelCluster     = "cluster"
	LabelInstance    = "instance"
	LabelDatabase    = "database"
	LabelTable       = "table"
	LabelColumns     = "columns"
	LabelRole        = "role"
	LabelClientAddr  = "client_addr"
	LabelApplication = "application"
	LabelSource      = "source"
)

// Annotation names.
const (
	AnnotationSummary     = "summary"
	AnnotationDescription = "description"
	AnnotationRunbookURL  = "runbook_url"
)

// Alert is one transition of one alert. Its JSON form is the alert line contract.
type Alert struct {
	Time        time.Time         `json:"time"`
	State       State             `json:"state"`
	Rule        string            `json:"rule"`
	Severity    Severity          `json:"severity"`
	Fingerprint string            `json:"fingerprint"`
	Value       float64           `json:"value"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// Fingerprint identifies an alert across its transitions and restarts: the same rule
// and group labels always give the same fingerprint. It is 16 hex digits of SHA-256
// over the rule and the labels in key order.
func Fingerprint(rule string, labels map[string]string) string {
	h := sha256.New()
	h.Write([]byte(rule))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		h.Write([]byte{0xff})
		h.Write([]byte(k))
		h.Write([]byte{0xfe})
		h.Write([]byte(labels[k]))
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}
