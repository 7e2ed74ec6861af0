package response

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/pgtripwire/pgtripwire/model"
)

// Rule is the rule name of the alert lines that record responses.
const Rule = "ResponseTaken"

// Labels and annotation of a ResponseTaken line, besides role and database.
const (
	LabelResponseTo = "response_to" // the fingerprint of the alert responded to
	LabelResponseID = "response_id" // makes each response an alert of its own
	LabelActions    = "actions"     // the actions asked for: "terminate,lock_role"
	LabelOutcome    = "outcome"     // applied, partial, refused, failed, shadow
	LabelBy         = "by"          // respond (the CLI) or automatic
	AnnotationActor = "actor"       // who responded: user@host for the CLI
)

// Who responded.
const (
	ByRespond   = "respond"
	ByAutomatic = "automatic"
)

// Origin is who responded and when.
type Origin struct {
	// By is ByRespond or ByAutomatic.
	By string
	// Actor names who responded: the OS user@host of `pgtripwire respond`.
	Actor string
	Time  time.Time
}

// Record turns a response into its alert lines: a firing line of rule ResponseTaken
// (severity warning) and its resolved line, at the same time, because a response is
// a moment, not a condition — log consumers counting firing lines see it, nothing waits
// for it to resolve, and the detector's restart reconciliation finds it resolved.
// res nil records what would have been done without doing it (the automatic
// response's shadow mode: outcome shadow). Each call gives a new fingerprint (the
// response_id label), so that two responses to one alert are two alerts. The lines
// name roles, tables, columns and pids, never a value and never SQL.
func Record(p *Plan, res *Result, o Origin) []model.Alert {
	outcome := OutcomeShadow
	steps := shadowSteps(p)
	if res != nil {
		outcome, steps = res.Outcome(), res.Steps
	}
	actions := make([]string, len(p.Actions))
	for i, a := range p.Actions {
		actions[i] = string(a)
	}
	labels := map[string]string{
		LabelResponseTo: p.Fingerprint,
		LabelResponseID: responseID(o.Time),
		model.LabelRole: p.Role,
		LabelActions:    strings.Join(actions, ","),
		LabelOutcome:    outcome,
		LabelBy:         o.By,
	}
	if p.Database != "" {
		labels[model.LabelDatabase] = p.Database
	}
	annotations := map[string]string{
		model.AnnotationSummary:     summary(p, steps, outcome, o.By),
		model.AnnotationDescription: description(steps, outcome),
	}
	if o.Actor != "" {
		annotations[AnnotationActor] = o.Actor
	}
	done := 0
	for _, s := range steps {
		if s.Outcome == Done {
			done++
		}
	}
	firing := model.Alert{
		Time: o.Time, State: model.StateFiring, Rule: Rule, Severity: model.SeverityWarning,
		Fingerprint: model.Fingerprint(Rule, labels), Value: float64(done),
		Labels: labels, Annotations: annotations,
	}
	resolved := firing
	resolved.State = model.StateResolved
	resolved.Labels, resolved.Annotations = maps.Clone(labels), maps.Clone(annotations)
	return []model.Alert{firing, resolved}
}

// shadowSteps are the plan's steps and refusals as a result that ran nothing.
func shadowSteps(p *Plan) []StepResult {
	var steps []StepResult
	for _, s := range p.Steps {
		steps = append(steps, StepResult{Action: s.Action, Target: s.Target, Outcome: NothingToDo, Detail: "would have run"})
	}
	return append(steps, Refusals(p).Steps...)
}

// responseID is the response's time to the microsecond and 32 random bits: unique
// even for two responses in one microsecond.
func responseID(t time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return t.UTC().Format("20060102T150405.000000Z") + "-" + hex.EncodeToString(b[:])
}

func summary(p *Plan, steps []StepResult, outcome, by string) string {
	head := "Response to " + p.Fingerprint
	if by == ByAutomatic {
		head = "Automatic response to " + p.Fingerprint
	}
	var pids, gone, revoked []string
	var locked bool
	var failed, refused int
	for _, s := range steps {
		shadowOrDone := s.Outcome == Done || (outcome == OutcomeShadow && s.Outcome == NothingToDo)
		switch {
		case s.Outcome == Failed:
			failed++
		case s.Outcome == Refused:
			refused++
		case !shadowOrDone:
			if s.Action == Terminate {
				gone = append(gone, strings.TrimPrefix(s.Target, "session pid "))
			}
		case s.Action == Terminate:
			pids = append(pids, strings.TrimPrefix(s.Target, "session pid "))
		case s.Action == LockRole:
			locked = true
		case s.Action == Revoke:
			revoked = append(revoked, s.Target)
		}
	}
	var parts []string
	if len(pids) > 0 {
		parts = append(parts, fmt.Sprintf("terminated %s (%s %s)", plural(len(pids), "session"), plural0(len(pids), "pid"), strings.Join(pids, ", ")))
	}
	if locked {
		parts = append(parts, "locked role "+p.Role)
	}
	if len(revoked) > 0 {
		parts = append(parts, "revoked from "+p.Role+": "+strings.Join(revoked, "; "))
	}
	if len(gone) > 0 {
		parts = append(parts, fmt.Sprintf("%s already gone", plural(len(gone), "session")))
	}
	if failed > 0 {
		parts = append(parts, plural(failed, "step")+" failed")
	}
	if refused > 0 {
		parts = append(parts, strconv.Itoa(refused)+" refused")
	}
	switch outcome {
	case OutcomeShadow:
		return head + " (shadow): would have " + strings.Join(parts, ", ")
	case OutcomeRefused, OutcomeFailed:
		return head + " " + outcome + ": " + strings.Join(parts, ", ")
	}
	return head + ": " + strings.Join(parts, ", ")
}

// description is one line per step: action, target, outcome and why.
func description(steps []StepResult, outcome string) string {
	var b strings.Builder
	for i, s := range steps {
		if i > 0 {
			b.WriteString("\n")
		}
		o := string(s.Outcome)
		if outcome == OutcomeShadow && s.Outcome == NothingToDo {
			o = "shadow"
		}
		fmt.Fprintf(&b, "%s %s: %s: %s", s.Action, s.Target, o, s.Detail)
	}
	return b.String()
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

func plural0(n int, noun string) string {
	if n == 1 {
		return noun
	}
	return noun + "s"
}
