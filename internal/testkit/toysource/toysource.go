// Package toysource is the smallest complete source, for the test that shows what adding
// a source takes: this package and one line in a table of Definitions. It reports
// every session whose application_name is "toy-intruder" (Source "toy", Kind
// "toy_session", Role the session's user).
//
// It is a test kit: production code never imports it.
package toysource

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/model"
)

// Definition is the toy source (sources.toy: enabled, interval).
var Definition = source.Definition{Name: "toy", Settings: func() source.Settings {
	return &source.PollSettings{Enabled: false, Interval: time.Second,
		New: func(env source.Env, _ time.Duration) (source.Poller, error) { return &poller{env: env}, nil }}
}}

type poller struct{ env source.Env }

func (p *poller) Start(context.Context, *pgx.Conn) error { return nil }

func (p *poller) Poll(ctx context.Context, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, `SELECT usename, datname FROM pg_stat_activity WHERE application_name = 'toy-intruder'`)
	if err != nil {
		return fmt.Errorf("poll pg_stat_activity: %w", err)
	}
	var events []model.Event
	var role, database string
	if _, err := pgx.ForEachRow(rows, []any{&role, &database}, func() error {
		events = append(events, model.Event{Time: p.env.Now(), Source: p.env.Source(), Kind: "toy_session",
			Role: role, Database: database, Rows: 1, Calls: 1, Complete: true})
		return nil
	}); err != nil {
		return fmt.Errorf("poll pg_stat_activity: %w", err)
	}
	return p.env.Sink.HandleEvents(ctx, events)
}
