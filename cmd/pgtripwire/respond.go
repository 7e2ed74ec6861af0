package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/pgtripwire/pgtripwire/detector"
	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/evidence"
	"github.com/pgtripwire/pgtripwire/detector/notify"
	"github.com/pgtripwire/pgtripwire/detector/response"
	"github.com/pgtripwire/pgtripwire/model"
)

const respondHelp = `Stop a read an alert reported, from the evidence captured when it fired
(state_dir/evidence/FINGERPRINT.json): terminate the role's sessions that are
still the captured ones (pid and backend_start), lock the role (NOLOGIN: its
open sessions stay until terminated, so give --terminate --lock-role together),
revoke the ways it holds SELECT on the table that can be taken from it alone.

Without --apply it prints the exact SQL and changes nothing: a dry run is not a
response, and writes no line. With --apply it runs the SQL as the role of
response.dsn (PGTRIPWIRE_RESPONSE_DSN), prints each step's outcome and appends a
ResponseTaken firing line and its resolved line to alerts.file.

Refused, with the reason: superusers, the detector's role (database.dsn), the
responder's own role, roles.application unless --force, grants to PUBLIC and
ownership. See docs/response.md.

Exit status: 0 when every step was done or had nothing to do (or a dry run), 1
when a step failed or was refused, or the evidence cannot be read, 2 for bad
usage, a bad configuration or no response.dsn with --apply.`

type respondFlags struct {
	config                      string
	terminate, lockRole, revoke bool
	apply, force                bool
}

func newRespondCommand(stdout io.Writer) *cobra.Command {
	f := &respondFlags{}
	cmd := &cobra.Command{
		Use:   "respond FINGERPRINT --config FILE [--terminate] [--lock-role] [--revoke] [--apply] [--force]",
		Short: "Terminate, lock or revoke from the role of an alert: print the SQL, or run it with --apply",
		Long:  respondHelp,
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return respond(cmd.Context(), stdout, args[0], f)
		},
	}
	cmd.Flags().StringVar(&f.config, "config", "", "path to the YAML configuration file")
	cmd.Flags().BoolVar(&f.terminate, "terminate", false, "terminate the role's captured sessions")
	cmd.Flags().BoolVar(&f.lockRole, "lock-role", false, "make the role NOLOGIN")
	cmd.Flags().BoolVar(&f.revoke, "revoke", false, "revoke the role's SELECT on the alert's table")
	cmd.Flags().BoolVar(&f.apply, "apply", false, "run the SQL as response.dsn's role and record the response (default: print it only)")
	cmd.Flags().BoolVar(&f.force, "force", false, "act on a role of roles.application")
	return cmd
}

func respond(ctx context.Context, stdout io.Writer, fingerprint string, f *respondFlags) error {
	if err := requireConfigFlag(f.config); err != nil {
		return err
	}
	var actions []response.Action
	for a, on := range map[response.Action]bool{response.Terminate: f.terminate, response.LockRole: f.lockRole, response.Revoke: f.revoke} {
		if on {
			actions = append(actions, a)
		}
	}
	if len(actions) == 0 {
		return usageError{errors.New("no action: give --terminate, --lock-role and/or --revoke")}
	}
	if err := evidence.CheckFingerprint(fingerprint); err != nil {
		return usageError{err}
	}
	cfg, err := loadConfig(f.config)
	if err != nil {
		return err
	}
	if f.apply && cfg.Response.DSN == "" {
		return usageError{fmt.Errorf("response.dsn is not set (nor %s): --apply needs the responder's own connection (docs/response.md)", "PGTRIPWIRE_RESPONSE_DSN")}
	}
	store := detector.EvidenceStore(cfg)
	ev, err := store.Load(fingerprint)
	if err != nil {
		return fmt.Errorf("evidence of alert %s: %w", fingerprint, err)
	}
	guard := response.Guard{ApplicationRoles: cfg.Roles.Application, Force: f.force}
	cluster, readOn := ev.Labels[model.LabelCluster], ev.Labels[model.LabelInstance]
	guard.DetectorRole = detectorRole(cfg, cluster, readOn)
	if rCluster, rInstance, ok := cfg.ServerOf(cfg.Response.DSN); f.apply && ok && readOn != "" {
		switch {
		case rCluster != cluster:
			// Roles and grants are a cluster's: another cluster's are not these.
			return usageError{fmt.Errorf("the read ran in cluster %q and response.dsn connects to cluster %q: "+
				"respond with a response.dsn of the read's cluster (PGTRIPWIRE_RESPONSE_DSN)", cluster, rCluster)}
		case rInstance != readOn && f.terminate:
			// A pid is one server's; a role locked or a grant revoked on the primary
			// holds on its standbys, a session does not end there.
			return usageError{fmt.Errorf("the read ran on %s and response.dsn connects to %s: terminate its session "+
				"with a response.dsn of %s (PGTRIPWIRE_RESPONSE_DSN); --lock-role and --revoke on the primary hold on its standbys",
				readOn, rInstance, readOn)}
		}
	}
	plan, err := response.NewPlan(ev, actions, guard)
	if err != nil {
		return err
	}
	if _, err := plan.WriteTo(stdout); err != nil {
		return err
	}
	if !f.apply {
		fmt.Fprintln(stdout, "-- dry run: nothing was changed or recorded; add --apply to respond")
		return nil
	}

	res := applyPlan(ctx, cfg, plan)
	for _, s := range res.Steps {
		fmt.Fprintf(stdout, "%s %s: %s: %s\n", s.Action, s.Target, s.Outcome, s.Detail)
	}
	alerts := response.Record(plan, res, response.Origin{By: response.ByRespond, Actor: actor(), Time: time.Now()})
	if err := notify.AppendAlertLines(cfg.Alerts.File, alerts...); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "recorded in %s: %s %s, outcome %s\n", cfg.Alerts.File, response.Rule, alerts[0].Fingerprint, res.Outcome())
	if o := res.Outcome(); o != response.OutcomeApplied {
		return fmt.Errorf("response %s: a step failed or was refused (above)", o)
	}
	return nil
}

// detectorRole is the role the detector connects to the alert's server as (never to
// be terminated or locked by a response): its DSN's user.
func detectorRole(cfg *config.Config, cluster, instance string) string {
	for _, w := range cfg.Watches() {
		for _, s := range append([]config.WatchedServer{w.Primary}, w.Standbys...) {
			if w.Cluster == cluster && (s.Instance == instance || instance == "") {
				if c, err := pgx.ParseConfig(s.DSN); err == nil {
					return c.User
				}
			}
		}
	}
	return ""
}

// applyPlan connects as the responder and applies the plan; a failed connection fails
// every step, and is recorded like any other failure.
func applyPlan(ctx context.Context, cfg *config.Config, plan *response.Plan) *response.Result {
	conn, err := responderConn(ctx, cfg, "pgtripwire respond")
	if err != nil {
		return response.NotApplied(plan, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return response.Apply(ctx, conn, plan)
}

// responderConn connects with response.dsn, as application.
func responderConn(ctx context.Context, cfg *config.Config, application string) (*pgx.Conn, error) {
	connConfig, err := pgx.ParseConfig(cfg.Response.DSN)
	if err != nil {
		// pgx's message may quote the DSN: never print it.
		return nil, errors.New("response.dsn is not a valid connection string")
	}
	if connConfig.ConnectTimeout == 0 {
		connConfig.ConnectTimeout = connectTimeout
	}
	connConfig.RuntimeParams["application_name"] = application
	conn, err := pgx.ConnectConfig(ctx, connConfig)
	if err != nil {
		return nil, fmt.Errorf("connect as the responder: %w", err)
	}
	return conn, nil
}

// actor is who ran the command: OS user@host.
func actor() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return name + "@" + host
}
