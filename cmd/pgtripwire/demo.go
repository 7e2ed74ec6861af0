package main

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/pgtripwire/pgtripwire/detector/demo"
)

func newDemoCommand(flags *globalFlags, stdout, stderr io.Writer) *cobra.Command {
	var opts demo.Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Catch simulated credential dumps on a throwaway local PostgreSQL, then clean up",
		Long: "demo starts a throwaway PostgreSQL from the local server binaries, seeds users, runs the\n" +
			"detector with its default settings, plays benign traffic and then each variant of a\n" +
			"credential dump, prints the alerts as they fire and a closing table. It exits 0 when\n" +
			"every scenario today's rules must catch was detected and nothing benign alerted.",
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(flags, stderr)
			if err != nil {
				return err
			}
			defer func() { _ = logger.Sync() }()
			opts.Out, opts.Logger = stdout, logger
			_, err = demo.Run(cmd.Context(), opts)
			return err
		},
	}
	cmd.Flags().IntVar(&opts.Users, "users", 100_000, "accounts to seed")
	cmd.Flags().BoolVar(&opts.Keep, "keep", false,
		"after the report, leave PostgreSQL and the detector running (metrics URL and DSN printed) until Ctrl-C")
	return cmd
}
