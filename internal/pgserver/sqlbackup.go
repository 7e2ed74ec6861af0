package pgserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// sqlBackupLabelPrefix starts the label of sqlBaseBackup's backups, followed
// by the slot's name. The standby keeps the backup_label it started from as
// backup_label.old, so a test can tell how it was made.
const sqlBackupLabelPrefix = "pgtripwire standby "

// excludedContents are the data directory's subdirectories whose contents a
// base backup leaves out, as PostgreSQL's own BASE_BACKUP does: state that is
// rebuilt at startup or belongs to the primary (its slots). The directories
// themselves are kept: the server expects them. pg_wal is kept with its
// subdirectories (archive_status, summaries) but no segment: the standby
// streams the WAL from the backup's start instead.
var excludedContents = []string{
	"pg_dynshmem", "pg_notify", "pg_replslot", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans",
}

// excludedFiles are files of the data directory's top level that a base
// backup leaves out: the primary's postmaster's, and labels of other backups.
var excludedFiles = []string{
	"postmaster.pid", "postmaster.opts", "backup_label", "backup_label.old", "tablespace_map",
	"backup_manifest", "postgresql.auto.conf.tmp", "current_logfiles.tmp",
}

// sqlBaseBackup fills the empty data directory with a base backup of the
// primary taken without pg_basebackup, which the server-only builds lack: a
// low-level backup (pg_backup_start, a copy of the files, pg_backup_stop)
// through SQL, on a physical slot created first with its WAL reserved, so that
// the primary keeps every segment from the backup's start until the standby
// has streamed it (the copy has no WAL of its own). It then writes what
// pg_basebackup -R does: standby.signal, and primary_conninfo and
// primary_slot_name in postgresql.auto.conf.
//
// The backup's connection stays open from start to stop: closing it on error
// aborts the backup. The slot is the caller's to drop (Close does).
func (sb *Server) sqlBaseBackup(ctx context.Context) error {
	p := sb.primary
	conn, err := pgx.Connect(ctx, p.SuperuserDSN("postgres"))
	if err != nil {
		return fmt.Errorf("SQL base backup: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `SELECT pg_create_physical_replication_slot($1, true)`, sb.slot); err != nil {
		return fmt.Errorf("SQL base backup: create slot %s: %w", sb.slot, err)
	}
	// Non-exclusive (the only kind from 15): the backup lives as long as this
	// session, and the label comes back from the stop instead of being written
	// into the primary's data directory.
	start, stop := `SELECT pg_backup_start($1, true)`, `SELECT labelfile, spcmapfile FROM pg_backup_stop(true)`
	if p.version < 15 {
		start, stop = `SELECT pg_start_backup($1, true, false)`, `SELECT labelfile, spcmapfile FROM pg_stop_backup(false, true)`
	}
	if _, err := conn.Exec(ctx, start, sqlBackupLabelPrefix+sb.slot); err != nil {
		return fmt.Errorf("SQL base backup: start: %w", err)
	}
	if err := copyDataDir(ctx, p.dataDir, sb.dataDir); err != nil {
		return fmt.Errorf("SQL base backup: %w", err)
	}
	var label, spcmap string
	if err := conn.QueryRow(ctx, stop).Scan(&label, &spcmap); err != nil {
		return fmt.Errorf("SQL base backup: stop: %w", err)
	}
	conninfo := fmt.Sprintf("host=%s port=%d user=%s", p.Host(), p.Port(), superuser)
	err = errors.Join(
		os.WriteFile(filepath.Join(sb.dataDir, "backup_label"), []byte(label), 0o600),
		writeIf(spcmap != "", filepath.Join(sb.dataDir, "tablespace_map"), spcmap),
		os.WriteFile(filepath.Join(sb.dataDir, "standby.signal"), nil, 0o600),
		appendFile(filepath.Join(sb.dataDir, "postgresql.auto.conf"),
			"primary_conninfo = "+quoteConf(conninfo)+"\n"+
				"primary_slot_name = "+quoteConf(sb.slot)+"\n"),
	)
	if err == nil {
		err = sb.as.chownTree(sb.dataDir)
	}
	if err != nil {
		return fmt.Errorf("SQL base backup: %w", err)
	}
	return nil
}

// copyDataDir copies the data directory src, which a running server is
// changing, into the empty directory dst, leaving out what a base backup
// does. Files and directories that vanish meanwhile (a dropped table, a
// removed temporary file) are skipped: WAL replay from the backup's start
// brings dst to where src was at its end. Files are copied with their
// permission bits; the caller hands them to the server's user.
func copyDataDir(ctx context.Context, src, dst string) error {
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil // dst exists, made by layOut
		}
		top, rest, nested := strings.Cut(rel, string(filepath.Separator))
		switch {
		case !nested && !d.IsDir() && slices.Contains(excludedFiles, top):
			return nil
		case nested && slices.Contains(excludedContents, top):
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		case nested && top == "pg_wal" && !d.IsDir():
			return nil
		case strings.HasPrefix(d.Name(), "pgsql_tmp") || d.Name() == "pg_internal.init":
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		case top == "pg_tblspc" && rest != "":
			// A tablespace is a symbolic link to a directory outside the
			// data directory, which the standby would then share.
			return fmt.Errorf("copy %s: tablespaces are not supported", rel)
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.Mkdir(target, info.Mode().Perm())
		case d.Type().IsRegular():
			return copyFile(path, target, info.Mode().Perm())
		default:
			return fmt.Errorf("copy %s: not a regular file or directory (%v)", rel, d.Type())
		}
	})
	if err != nil {
		return fmt.Errorf("copy data directory: %w", err)
	}
	return nil
}

// copyFile copies src to the new file dst; a src that has vanished is
// skipped.
func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}

// writeIf writes content to path, mode 0600, when cond holds.
func writeIf(cond bool, path, content string) error {
	if !cond {
		return nil
	}
	return os.WriteFile(path, []byte(content), 0o600)
}

// appendFile appends text to the existing file path.
func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
