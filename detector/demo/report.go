package demo

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgtripwire/pgtripwire/model"
)

// Report is what the demo found.
type Report struct {
	// Results has one entry per breach scenario, in the order they were played.
	Results []Result
	// FalseAlerts are the firing alerts not raised by a breach scenario's role: the
	// benign traffic's, or anything else's.
	FalseAlerts []model.Alert
	// AlertLog is the path of the alert log (removed with the demo unless kept).
	AlertLog string
}

// Result is the outcome of one breach scenario.
type Result struct {
	Scenario string
	Role     string
	// Required is false for a scenario today's rules cannot catch by design (CoveredBy
	// names what will); missing it does not fail the demo.
	Required  bool
	CoveredBy string
	Detected  bool
	// TimeToDetect runs from the end of the read (the client has every row) to the time
	// on the firing line.
	TimeToDetect time.Duration
	Alert        model.Alert // the firing alert when Detected
	// Judged is false when the detector had not even counted the read's rows before
	// the deadline.
	Judged bool
}

// Err is nil when every required scenario was detected and nothing else alerted;
// otherwise it says which scenarios were missed and what alerted falsely.
func (r *Report) Err() error {
	var problems []string
	var missed []string
	for _, res := range r.Results {
		if res.Required && !res.Detected {
			missed = append(missed, fmt.Sprintf("%q (role %s)", res.Scenario, res.Role))
		}
	}
	if len(missed) > 0 {
		problems = append(problems, "not detected: "+strings.Join(missed, ", "))
	}
	if n := len(r.FalseAlerts); n > 0 {
		var who []string
		for _, a := range r.FalseAlerts {
			who = append(who, fmt.Sprintf("%s for role %s", a.Rule, orUnknown(a.Labels[model.LabelRole])))
		}
		problems = append(problems, fmt.Sprintf("%d false alert(s): %s", n, strings.Join(who, ", ")))
	}
	if len(problems) == 0 {
		return nil
	}
	return errors.New("demo failed: " + strings.Join(problems, "; "))
}

// print writes the closing table.
func (r *Report) print(out io.Writer) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tROLE\tEXPECTED\tRESULT\tTIME TO DETECT")
	for _, res := range r.Results {
		expected := "required"
		if !res.Required {
			expected = "not yet"
		}
		result, ttd := "NOT DETECTED", "-"
		switch {
		case res.Detected:
			result, ttd = "detected", res.TimeToDetect.Round(10*time.Millisecond).String()
			if !res.Required {
				result = "detected (flip to required)"
			}
		case !res.Required:
			result = "not yet covered (" + res.CoveredBy + ")"
		case !res.Judged:
			result = "NOT DETECTED (rows never counted)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", res.Scenario, res.Role, expected, result, ttd)
	}
	_ = tw.Flush() // the terminal; nowhere better to report a failed write
	fmt.Fprintf(out, "false alerts during benign traffic: %d\n", len(r.FalseAlerts))
}
