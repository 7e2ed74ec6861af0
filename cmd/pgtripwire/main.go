// Command pgtripwire detects bulk reads and mass changes of a PostgreSQL database's
// credential columns and raises alerts. Exit codes: 0 success, 1 runtime failure,
// 2 bad usage or bad configuration.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pgtripwire/pgtripwire/detector"
	"github.com/pgtripwire/pgtripwire/detector/buildinfo"
	"github.com/pgtripwire/pgtripwire/detector/config"
)

// Exit codes of the CLI contract.
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

func main() {
	// Signals are ours from the first instant: SIGHUP's default action kills the
	// process, and a config-management tool may send it as soon as the service starts.
	// A SIGHUP that arrives before the detector is built waits in hup.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runWith(ctx, os.Args[1:], os.Stdout, os.Stderr, hup)
	stop()
	signal.Stop(hup)
	os.Exit(code)
}

// usageError is a problem with how the command was called, not with what it did.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

type globalFlags struct {
	logFormat string
	logLevel  string
}

// run executes the command line and returns the process exit code; `run` listens for
// SIGHUP itself.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runWith(ctx, args, stdout, stderr, nil)
}

// runWith is run with the SIGHUP notifications main registered at its start (nil:
// `run` registers them when it starts).
func runWith(ctx context.Context, args []string, stdout, stderr io.Writer, hup chan os.Signal) int {
	root := newRootCommand(stdout, stderr, hup)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "pgtripwire:", err)
	var cfgErrs config.Errors
	var cfgErr *detector.ConfigError
	var usage usageError
	switch {
	case errors.As(err, &cfgErrs), errors.As(err, &cfgErr), errors.As(err, &usage):
		return exitUsage
	default:
		return exitRuntime
	}
}

func newRootCommand(stdout, stderr io.Writer, hup chan os.Signal) *cobra.Command {
	flags := &globalFlags{}
	root := &cobra.Command{
		Use:           "pgtripwire",
		Short:         "Page on-call when someone walks off with the credential columns of a PostgreSQL database",
		SilenceUsage:  true,
		SilenceErrors: true,
		// Setting Args and RunE on the root makes an unknown command a usageError
		// (exit 2) instead of cobra's untyped "unknown command" error.
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q (see pgtripwire --help)", args[0])}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = cmd.Help()
			return usageError{errors.New("a command is required")}
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVar(&flags.logFormat, "log-format", "json", `log format: "json" or "console"`)
	root.PersistentFlags().StringVar(&flags.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.AddCommand(
		newRunCommand(flags, stdout, stderr, hup),
		newCheckCommand(stdout),
		newVersionCommand(stdout),
		newDemoCommand(flags, stdout, stderr),
		newClassifyCommand(stdout, stderr),
		newDiscoverCommand(stdout),
		newRulesCommand(stdout, stderr),
		newCanaryCommand(stdout),
		newSetupCommand(stdout),
		newDoctorCommand(stdout),
		newEvidenceCommand(stdout),
		newRespondCommand(stdout),
	)
	return root
}

// exactArgs is cobra.ExactArgs whose failure is a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

func requireConfigFlag(path string) error {
	if path == "" {
		return usageError{errors.New("--config FILE is required")}
	}
	return nil
}

func newRunCommand(flags *globalFlags, stdout, stderr io.Writer, hup chan os.Signal) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Watch the database until SIGINT or SIGTERM (SIGHUP reloads the rule files and reopens the alert log)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireConfigFlag(path); err != nil {
				return err
			}
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			logger, err := newLogger(flags, stderr)
			if err != nil {
				return err
			}
			defer func() { _ = logger.Sync() }()
			d, err := detector.New(cfg, detector.Deps{
				Logger:   logger,
				Registry: newRegistry(),
				Stdout:   stdout,
			})
			if err != nil {
				return err
			}
			stopReload := reloadOnSIGHUP(d, hup)
			defer stopReload()
			return d.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "path to the YAML configuration file")
	return cmd
}

func newCheckCommand(stdout io.Writer) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "check --config FILE",
		Short: "Validate a configuration file and report every problem with file:line:col",
		Args:  exactArgs(0),
		RunE: func(_ *cobra.Command, _ []string) error {
			if err := requireConfigFlag(path); err != nil {
				return err
			}
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			groups, err := detector.LoadRules(cfg)
			if err != nil {
				return err
			}
			rules := 0
			for _, g := range groups {
				rules += len(g.Rules)
			}
			if cfg.Fleet() {
				servers := 0
				for _, w := range cfg.Watches() {
					servers += 1 + len(w.Standbys)
				}
				fmt.Fprintf(stdout, "%s: OK (%d cluster(s), %d server(s), %d rule(s))\n", path, len(cfg.Targets), servers, rules)
				return nil
			}
			fmt.Fprintf(stdout, "%s: OK (database %s, %d sensitive table(s), %d rule(s))\n",
				path, cfg.RedactedDSN(), len(cfg.Sensitive), rules)
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "path to the YAML configuration file")
	return cmd
}

// reloadOnSIGHUP reloads d's rules and reopens its alert log on every SIGHUP on hup
// (nil: it registers for SIGHUP itself) until the returned function is called. A
// failed reload is logged by the detector and leaves the running rules.
func reloadOnSIGHUP(d *detector.Detector, hup chan os.Signal) (stop func()) {
	if hup == nil {
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case <-hup:
				_ = d.ReopenAlertLog() // logged; after a rotation by rename
				_ = d.Reload()
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-stopped
	}
}

// loadConfig loads the file; a file that cannot be read is a configuration problem
// (exit 2) like one that does not validate.
func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path, os.Getenv)
	var errs config.Errors
	if err != nil && !errors.As(err, &errs) {
		return nil, usageError{err}
	}
	return cfg, err
}

func newVersionCommand(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  exactArgs(0),
		RunE: func(_ *cobra.Command, _ []string) error {
			fmt.Fprintln(stdout, "pgtripwire", buildinfo.String())
			return nil
		},
	}
}

// newLogger builds the process logger on stderr: stdout is reserved for alert lines.
func newLogger(flags *globalFlags, stderr io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(flags.logLevel)
	if err != nil {
		return nil, usageError{fmt.Errorf("--log-level: %w", err)}
	}
	var enc zapcore.Encoder
	switch flags.logFormat {
	case "json":
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, usageError{fmt.Errorf(`--log-format: got %q, want "json" or "console"`, flags.logFormat)}
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(stderr)), level)), nil
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
