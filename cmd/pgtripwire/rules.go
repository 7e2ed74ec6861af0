package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/pgtripwire/pgtripwire/rules"
	"github.com/pgtripwire/pgtripwire/rules/rulefmt"
	"github.com/pgtripwire/pgtripwire/rules/ruletest"
)

func newRulesCommand(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rules",
		Short: "Work with rule files",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown rules command %q (see pgtripwire rules --help)", args[0])}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = cmd.Help()
			return usageError{errors.New("a rules command is required")}
		},
	}
	cmd.AddCommand(newRulesCheckCommand(stdout, stderr), newRulesTestCommand(stdout, stderr), newRulesDefaultCommand(stdout))
	return cmd
}

func newRulesDefaultCommand(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "default",
		Short: "Print the default rule pack embedded in this binary",
		Long: "Prints rules/default.yml as embedded in this binary: the starting point of a rule file of " +
			"your own (list it in rules.files and turn the pack's rules off with rules.disable or " +
			"rules.default_pack: false).",
		Args: exactArgs(0),
		RunE: func(_ *cobra.Command, _ []string) error {
			_, err := stdout.Write(rules.DefaultPack())
			return err
		},
	}
}

func newRulesTestCommand(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "test FILE...",
		Short: "Run rule unit tests: timed input events, expected alerts",
		Long: "Runs the tests of each rule test file (format in docs/rules.md) through the rule engine, " +
			"printing PASS or FAIL per test, with what was firing and what was expected for each failure. " +
			"Exits 1 if a test failed, 2 if a test file or a rule file it loads has a problem " +
			"(each reported as file:line:col on stderr).",
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.MinimumNArgs(1)(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		},
		RunE: func(_ *cobra.Command, paths []string) error {
			ok, errs := ruletest.Run(stdout, paths...)
			for _, e := range errs {
				fmt.Fprintln(stderr, e)
			}
			switch {
			case errs != nil:
				return usageError{fmt.Errorf("rules test: %d problem(s) in the test or rule files", len(errs))}
			case !ok:
				return errors.New("rules test: some tests failed")
			}
			return nil
		},
	}
}

func newRulesCheckCommand(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "check FILE...",
		Short: "Validate rule files and report every problem with file:line:col",
		Long: "Parses, validates and compiles each rule file (CEL match expressions included) and " +
			"checks that rule names are unique across the files. Prints \"FILE: N rules OK\" for " +
			"each good file and every problem, one per line, on stderr; exits 2 if there is any.",
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.MinimumNArgs(1)(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		},
		RunE: func(_ *cobra.Command, paths []string) error {
			return checkRules(paths, stdout, stderr)
		},
	}
}

// checkRules reports on each file; a problem in any makes the check fail
// with a usage error (exit 2), as a bad configuration does.
func checkRules(paths []string, stdout, stderr io.Writer) error {
	var (
		files []*rulefmt.File
		errs  rulefmt.Errors
	)
	for _, p := range paths {
		f, ferrs := rulefmt.ParseFile(p)
		errs = append(errs, ferrs...)
		if f != nil {
			files = append(files, f)
		}
	}
	errs = append(errs, rulefmt.DuplicateRules(files...)...)
	bad := map[string]bool{}
	for _, e := range errs {
		bad[e.File] = true
	}
	for _, f := range files {
		switch {
		case bad[f.Path]:
		case f.RuleCount() == 0:
			fmt.Fprintf(stdout, "%s: OK, but it holds no rule: is that intended?\n", f.Path)
		default:
			fmt.Fprintf(stdout, "%s: %d rules OK\n", f.Path, f.RuleCount())
		}
	}
	if len(errs) == 0 {
		return nil
	}
	for _, e := range errs {
		fmt.Fprintln(stderr, e)
	}
	return usageError{fmt.Errorf("rules check: %d problem(s) in %d of %d file(s)", len(errs), len(bad), len(paths))}
}
