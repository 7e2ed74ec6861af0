package main

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/pgtripwire/pgtripwire/detector/demo"
)

func newDemoCommand(flags *globalFlags, stdout, stderr io.Writer) *cobra.Command {
	var users int
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Catch a simulated credential dump on a throwaway local PostgreSQL, then clean up",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(flags, stderr)
			if err != nil {
				return err
			}
			defer func() { _ = logger.Sync() }()
			return demo.Run(cmd.Context(), demo.Options{Users: users, Out: stdout, Logger: logger})
		},
	}
	cmd.Flags().IntVar(&users, "users", 100_000, "accounts to seed")
	return cmd
}
