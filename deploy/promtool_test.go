package deploy_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The alerting files, relative to this package's directory (where go test runs).
const (
	alertRulesFile      = "prometheus/pgtripwire-alerts.yml"
	alertRulesTestFile  = "prometheus/pgtripwire-alerts_test.yml"
	prometheusConfig    = "prometheus/prometheus.yml"
	alertmanagerConfig  = "alertmanager/alertmanager.yml"
	detectorHealthBook  = "../docs/runbooks/detector-health.md"
	detectorHealthURL   = "https://github.com/pgtripwire/pgtripwire/blob/main/docs/runbooks/detector-health.md#"
	deployToolsTimeout  = 2 * time.Minute
	installDepsAdvisory = "run scripts/install-deps.sh"
)

// runTool runs one of the tools the files are written for (promtool, amtool) and returns
// its combined output. A missing tool fails the test rather than skipping it: a skipped
// check of the alerting that pages on-call would pass silently on every machine without it.
func runTool(t *testing.T, tool string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath(tool)
	if err != nil {
		t.Fatalf("%s is not installed (%v): %s", tool, err, installDepsAdvisory)
	}
	ctx, cancel := context.WithTimeout(t.Context(), deployToolsTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPromtool checks the detector-health alerting rules and the Prometheus configuration
// with the promtool of the Prometheus that will load them, and runs the rules' unit tests.
func TestPromtool(t *testing.T) {
	t.Run("check rules", func(t *testing.T) {
		runTool(t, "promtool", "check", "rules", alertRulesFile)
	})
	t.Run("test rules", func(t *testing.T) {
		runTool(t, "promtool", "test", "rules", alertRulesTestFile)
	})
	// Loads rule_files too, so it also fails when prometheus.yml names a rule file that
	// is not next to it.
	t.Run("check config", func(t *testing.T) {
		runTool(t, "promtool", "check", "config", prometheusConfig)
	})
}

// TestAmtool checks the example Alertmanager configuration and that it routes by
// severity: critical pages, everything else goes to chat.
func TestAmtool(t *testing.T) {
	t.Run("check-config", func(t *testing.T) {
		runTool(t, "amtool", "check-config", alertmanagerConfig)
	})
	routes := []struct {
		name   string
		labels []string
		want   string
	}{
		{"detection pages", []string{"alertname=SensitiveBulkRead", "severity=critical", "table=public.users", "role=mallory", "database=app"}, "pager"},
		{"critical detector health pages", []string{"alertname=PgtripwireDown", "severity=critical", "instance=pgtripwire:9473"}, "pager"},
		{"warning goes to chat", []string{"alertname=PgtripwireSourceFailing", "severity=warning", "source=statements"}, "chat"},
		{"info goes to chat", []string{"alertname=SomethingInformational", "severity=info"}, "chat"},
		{"no severity goes to chat", []string{"alertname=Unlabelled"}, "chat"},
	}
	for _, tt := range routes {
		t.Run("route "+tt.name, func(t *testing.T) {
			args := append([]string{"config", "routes", "test", "--config.file=" + alertmanagerConfig,
				"--verify.receivers=" + tt.want}, tt.labels...)
			runTool(t, "amtool", args...)
		})
	}
}

// ruleFile is the part of a Prometheus rule file this test reads.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// ruleTestFile is the part of a promtool rule test file this test reads.
type ruleTestFile struct {
	Tests []struct {
		Name          string `yaml:"name"`
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func decodeYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestRulesAreTestedAndDocumented keeps the rules, their unit tests and their runbook in
// step: promtool passes a test file that never mentions a new alert, and a negative case
// for a misspelt alertname passes whatever the rule does.
func TestRulesAreTestedAndDocumented(t *testing.T) {
	var rules ruleFile
	decodeYAML(t, alertRulesFile, &rules)
	var tests ruleTestFile
	decodeYAML(t, alertRulesTestFile, &tests)
	book, err := os.ReadFile(detectorHealthBook)
	if err != nil {
		t.Fatal(err)
	}
	// GitHub's anchor of a heading made of letters only: the heading in lower case.
	var anchors []string
	for _, m := range regexp.MustCompile(`(?m)^## (\w+)$`).FindAllStringSubmatch(string(book), -1) {
		anchors = append(anchors, strings.ToLower(m[1]))
	}

	fires := map[string]bool{}
	silent := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, c := range tc.AlertRuleTest {
			if len(c.ExpAlerts) > 0 {
				fires[c.Alertname] = true
			} else {
				silent[c.Alertname] = true
			}
		}
	}

	var alerts []string
	for _, g := range rules.Groups {
		if g.Name != "pgtripwire-health" {
			t.Errorf("group %q: want every detector-health alert in group pgtripwire-health", g.Name)
		}
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			var problems []string
			if sev := r.Labels["severity"]; sev != "critical" && sev != "warning" {
				problems = append(problems, fmt.Sprintf("severity %q, want critical or warning", sev))
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[a] == "" {
					problems = append(problems, "no "+a+" annotation")
				}
			}
			if url := r.Annotations["runbook_url"]; url != "" {
				anchor, ok := strings.CutPrefix(url, detectorHealthURL)
				if !ok || !slices.Contains(anchors, anchor) {
					problems = append(problems, fmt.Sprintf("runbook_url %s: want %s<anchor of a heading of %s>", url, detectorHealthURL, detectorHealthBook))
				}
			}
			if !fires[r.Alert] {
				problems = append(problems, "no test case in which it fires")
			}
			if !silent[r.Alert] {
				problems = append(problems, "no test case in which it must not fire")
			}
			for _, p := range problems {
				t.Errorf("alert %s: %s", r.Alert, p)
			}
		}
	}
	if len(alerts) == 0 {
		t.Fatalf("%s: no alerting rules", alertRulesFile)
	}
	for _, tc := range tests.Tests {
		for _, c := range tc.AlertRuleTest {
			if !slices.Contains(alerts, c.Alertname) {
				t.Errorf("%s, test %q: alert %s is not defined in %s", alertRulesTestFile, tc.Name, c.Alertname, alertRulesFile)
			}
		}
	}
}
