package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/pgtripwire/pgtripwire/detector"
	"github.com/pgtripwire/pgtripwire/detector/evidence"
)

const evidenceHelp = `Print what was true when an alert fired: the sessions of its role and
client (pid, backend start, client address and port, application, state,
transaction start, wait event), the statement that made it fire (redacted)
and its pg_stat_statements counters, the role's privileges on the table and
how it holds them (direct grant, role membership, ownership, superuser,
BYPASSRLS), and the role's other alerts of the hour before.

FINGERPRINT is the alert line's "fingerprint" (the last path element of its
evidence_url annotation). The evidence is read from state_dir/evidence of the
configuration; a running detector serves the same at
/api/v1/evidence/FINGERPRINT. No literal value of any statement is stored or
printed.

Exit status: 0 when printed, 1 when there is no evidence for the fingerprint
or it cannot be read, 2 for bad usage or a bad configuration.`

func newEvidenceCommand(stdout io.Writer) *cobra.Command {
	var path, format string
	cmd := &cobra.Command{
		Use:   "evidence FINGERPRINT --config FILE [--format json|text]",
		Short: "Print the evidence captured when an alert fired",
		Long:  evidenceHelp,
		Args:  exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := requireConfigFlag(path); err != nil {
				return err
			}
			if format != "json" && format != "text" {
				return usageError{fmt.Errorf("--format %q: want json or text", format)}
			}
			if err := evidence.CheckFingerprint(args[0]); err != nil {
				return usageError{err}
			}
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			e, err := detector.EvidenceStore(cfg).Load(args[0])
			if errors.Is(err, evidence.ErrNotFound) {
				return fmt.Errorf("alert %s: %w", args[0], err)
			}
			if err != nil {
				return err
			}
			if format == "text" {
				return evidence.WriteText(stdout, e)
			}
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(e)
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "path to the YAML configuration file")
	cmd.Flags().StringVar(&format, "format", "json", `output format: "json", or "text" for people`)
	return cmd
}
