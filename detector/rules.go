package detector

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/rules"
	"github.com/pgtripwire/pgtripwire/rules/rulefmt"
)

// LoadRules returns the rule groups a detector with cfg evaluates: the default pack
// (unless rules.default_pack is false) without the rules named in rules.disable, then
// the groups of every file rules.files matches, in order. Every problem of every file
// is returned at once, with its file:line:col, as a *ConfigError; a name in
// rules.disable that is not a rule of the pack is one too.
func LoadRules(cfg *config.Config) ([]rulefmt.Group, error) {
	var (
		files    []*rulefmt.File
		errs     rulefmt.Errors
		problems []error // not about a place in a rule file
	)
	if cfg.Rules.DefaultPack {
		pack, perrs := rules.LoadDefaultPack()
		if len(perrs) > 0 {
			return nil, &ConfigError{Err: fmt.Errorf("the embedded default rule pack does not load (a build defect):\n%w", perrs)}
		}
		pack, unknown := withoutRules(pack, cfg.Rules.Disable)
		for _, name := range unknown {
			problems = append(problems, fmt.Errorf("rules.disable: %q is not a rule of the default pack", name))
		}
		files = append(files, pack)
	} else if len(cfg.Rules.Disable) > 0 {
		problems = append(problems, errors.New("rules.disable names rules of the default pack, but rules.default_pack is false"))
	}
	paths, err := ruleFiles(cfg.Rules.Files)
	if err != nil {
		return nil, &ConfigError{Err: err}
	}
	for _, p := range paths {
		f, ferrs := rulefmt.ParseFile(p)
		errs = append(errs, ferrs...)
		if f != nil {
			files = append(files, f)
		}
	}
	errs = append(errs, rulefmt.DuplicateRules(files...)...)
	if len(errs) > 0 {
		problems = append(problems, errs)
	}
	if len(problems) > 0 {
		return nil, &ConfigError{Err: errors.Join(problems...)}
	}
	var groups []rulefmt.Group
	for _, f := range files {
		groups = append(groups, f.Groups...)
	}
	return groups, nil
}

// withoutRules returns the file without the named rules, and the names it does not hold.
func withoutRules(f *rulefmt.File, names []string) (*rulefmt.File, []string) {
	if len(names) == 0 {
		return f, nil
	}
	found := map[string]bool{}
	out := &rulefmt.File{Path: f.Path}
	for _, g := range f.Groups {
		g.Rules = slices.DeleteFunc(slices.Clone(g.Rules), func(r *rulefmt.Rule) bool {
			if slices.Contains(names, r.Name) {
				found[r.Name] = true
				return true
			}
			return false
		})
		out.Groups = append(out.Groups, g)
	}
	var unknown []string
	for _, n := range names {
		if !found[n] {
			unknown = append(unknown, n)
		}
	}
	return out, unknown
}

// ruleFiles expands the patterns of rules.files, each file once, in pattern order.
// A pattern that matches nothing is an error: the configuration was checked when it
// was loaded, so a file has disappeared since.
func ruleFiles(patterns []string) ([]string, error) {
	var paths []string
	for _, p := range patterns {
		matches, err := filepath.Glob(p)
		if err != nil {
			return nil, fmt.Errorf("rules.files: %q: %w", p, err)
		}
		if len(matches) == 0 {
			return nil, fmt.Errorf("rules.files: %q matches no file", p)
		}
		for _, m := range matches {
			if !slices.Contains(paths, m) {
				paths = append(paths, m)
			}
		}
	}
	return paths, nil
}

// ruleFilesStamp identifies the current content of the rule files cheaply: their
// names, sizes and modification times. A change of any (a file edited, added to a
// glob, removed) changes the stamp.
func ruleFilesStamp(patterns []string) string {
	var b strings.Builder
	for _, p := range patterns {
		matches, _ := filepath.Glob(p)
		fmt.Fprintf(&b, "%s:%d;", p, len(matches))
		for _, m := range matches {
			fi, err := os.Stat(m)
			if err != nil {
				fmt.Fprintf(&b, "%s:?;", m)
				continue
			}
			fmt.Fprintf(&b, "%s:%d:%d;", m, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return b.String()
}

// ruleReloadInterval is how often the detector looks for changed rule files.
const ruleReloadInterval = time.Second

// ReopenAlertLog opens the alert log's path again, for a rotation by rename; the
// failure is logged and returned, and the log keeps writing to the file it had.
func (d *Detector) ReopenAlertLog() error {
	if err := d.notifier.AlertLog().Reopen(); err != nil {
		d.log.Error("alert log not reopened: lines still go to the file it had open", zap.Error(err))
		return err
	}
	d.log.Info("alert log reopened")
	return nil
}

// Reload reloads the rule files (and the default pack, with the same configuration):
// rules whose definition did not change keep their state. On any problem the rules
// already running keep running and the error, with every position, is returned.
func (d *Detector) Reload() error {
	groups, err := LoadRules(d.cfg)
	if err == nil {
		err = d.engine.Reload(groups)
	}
	if err != nil {
		d.metrics.reloads.WithLabelValues("failure").Inc()
		var ce *ConfigError
		if errors.As(err, &ce) {
			err = ce.Err
		}
		d.log.Error("rules not reloaded: the rules already running keep running", zap.Error(err))
		return err
	}
	d.pipeline.setResponding(respondingRules(d.cfg, groups))
	d.metrics.reloads.WithLabelValues("success").Inc()
	d.log.Info("rules reloaded", zap.Int("rules", countRules(groups)))
	return nil
}

func countRules(groups []rulefmt.Group) int {
	n := 0
	for _, g := range groups {
		n += len(g.Rules)
	}
	return n
}

// ruleStateFile is the engine's state in the state directory.
const ruleStateFile = "rules.json"

// detectorMetrics are the detector's own metrics (the parts have theirs).
type detectorMetrics struct {
	reloads *prometheus.CounterVec
}

func newDetectorMetrics(reg prometheus.Registerer) detectorMetrics {
	m := detectorMetrics{
		reloads: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_rule_reloads_total",
			Help: "Reloads of the rule files (SIGHUP or a changed file), by result; after a failure the previous rules keep running.",
		}, []string{"result"}),
	}
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	return m
}

// watchRuleFiles reloads the rules when a file of rules.files changes (edited, added
// to a pattern, removed), until ctx is done. A change is reloaded once the files have
// stayed the same for ruleSettle: a tool that rewrites a file (truncates, then writes)
// is done by then, and a half-written file is never loaded. An empty or unreadable file
// is refused like any bad file, and the running rules stay.
func (d *Detector) watchRuleFiles(ctx context.Context) error {
	loaded := ruleFilesStamp(d.cfg.Rules.Files)
	seen, seenAt := loaded, time.Now()
	t := time.NewTicker(ruleReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		stamp := ruleFilesStamp(d.cfg.Rules.Files)
		if stamp != seen {
			seen, seenAt = stamp, time.Now()
			continue
		}
		if stamp == loaded || time.Since(seenAt) < ruleSettle {
			continue
		}
		loaded = stamp
		d.log.Info("rule files changed; reloading")
		_ = d.Reload() // logged; the running rules stay on failure
	}
}

// ruleSettle is how long rule files must stay unchanged before a change is reloaded.
const ruleSettle = 3 * time.Second
