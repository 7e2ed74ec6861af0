package pgserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// BinDirEnv names the environment variable that points the harness at a
// PostgreSQL bin directory. When it is set it is used as is: a wrong value is
// an error, not a reason to look elsewhere, so a CI that pins a version never
// silently tests against another one.
const BinDirEnv = "PGTRIPWIRE_PG_BINDIR"

// MinVersion is the oldest PostgreSQL major version the harness accepts:
// compute_query_id, which pg_stat_statements and pg_stat_activity need to
// agree on query ids, first appeared in 14.
const MinVersion = 14

// debianBinGlob is where Debian and Ubuntu install each server version side by
// side; pg_config on PATH often belongs to the client package only.
const debianBinGlob = "/usr/lib/postgresql/*/bin"

// VersionEnv names the environment variable that selects a PostgreSQL major
// version ("17"): FindBinDir then takes that version's build from the
// project's own directory (LocalDir, filled by scripts/install-postgres.sh) or
// from the distribution's (/usr/lib/postgresql/17/bin), and Start refuses
// binaries of any other version. With BinDirEnv set too, BinDirEnv says where
// and this says which version must be found there.
const VersionEnv = "PGTRIPWIRE_PG_VERSION"

// LocalDir is the directory, at the root of the project, where
// scripts/install-postgres.sh unpacks the server builds the distribution does
// not have: LocalDir/<major>/{bin,lib,share}. FindBinDir looks for it in the
// working directory and each of its parents, as git looks for .git, so tests
// (run in their package's directory) and the demo (run from the root) find it.
const LocalDir = ".postgresql"

// debianVersionBin is where Debian installs the server binaries of one version.
const debianVersionBin = "/usr/lib/postgresql/%d/bin"

// FindBinDir returns the directory holding the PostgreSQL server binaries
// (initdb and postgres), looking in this order: $PGTRIPWIRE_PG_BINDIR; with
// $PGTRIPWIRE_PG_VERSION, that version's build (LocalDir, then Debian's);
// otherwise `pg_config --bindir`, then the highest-versioned
// /usr/lib/postgresql/<v>/bin. The error lists every place that was tried.
func FindBinDir() (string, error) {
	want, err := RequestedVersion()
	if err != nil {
		return "", fmt.Errorf("find PostgreSQL binaries: %w", err)
	}
	if dir := os.Getenv(BinDirEnv); dir != "" {
		if err := hasServerBinaries(dir); err != nil {
			return "", fmt.Errorf("find PostgreSQL binaries: $%s=%s: %w", BinDirEnv, dir, err)
		}
		return dir, nil
	}
	if want != 0 {
		return versionBinDir(want)
	}

	var tried []string
	tried = append(tried, "$"+BinDirEnv+" and $"+VersionEnv+" are unset")

	if out, err := exec.Command("pg_config", "--bindir").Output(); err != nil {
		tried = append(tried, fmt.Sprintf("pg_config --bindir: %v", err))
	} else {
		dir := strings.TrimSpace(string(out))
		if err := hasServerBinaries(dir); err != nil {
			tried = append(tried, fmt.Sprintf("pg_config --bindir gave %s: %v", dir, err))
		} else {
			return dir, nil
		}
	}

	dirs, _ := filepath.Glob(debianBinGlob) // the pattern is constant and valid
	// Highest version first: "15" must beat "9.6", so compare numerically.
	sort.Slice(dirs, func(i, j int) bool {
		return versionOfDebianDir(dirs[i]) > versionOfDebianDir(dirs[j])
	})
	for _, dir := range dirs {
		if err := hasServerBinaries(dir); err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", dir, err))
			continue
		}
		return dir, nil
	}
	if len(dirs) == 0 {
		tried = append(tried, debianBinGlob+" matched nothing")
	}
	return "", fmt.Errorf("find PostgreSQL server binaries (install the postgresql package, or set $%s): tried %s",
		BinDirEnv, strings.Join(tried, "; "))
}

// RequestedVersion is the major version $PGTRIPWIRE_PG_VERSION asks for, 0
// when it is unset. A value that is not a supported major version is an error.
func RequestedVersion() (int, error) {
	s := strings.TrimSpace(os.Getenv(VersionEnv))
	if s == "" {
		return 0, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < MinVersion {
		return 0, fmt.Errorf("$%s=%q: want a PostgreSQL major version, %d or later", VersionEnv, s, MinVersion)
	}
	return v, nil
}

// versionBinDir finds the build of major version v: the project's own
// (LocalDir/<v>/bin in the working directory or a parent), then Debian's.
func versionBinDir(v int) (string, error) {
	var candidates []string
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			candidates = append(candidates, filepath.Join(dir, LocalDir, strconv.Itoa(v), "bin"))
			if dir == filepath.Dir(dir) {
				break
			}
		}
	}
	candidates = append(candidates, fmt.Sprintf(debianVersionBin, v))
	for _, dir := range candidates {
		if hasServerBinaries(dir) == nil {
			return dir, nil
		}
	}
	return "", fmt.Errorf("find PostgreSQL %d ($%s): no initdb and postgres in %s/%d/bin of this directory or a parent, nor in %s: run scripts/install-postgres.sh %d",
		v, VersionEnv, LocalDir, v, fmt.Sprintf(debianVersionBin, v), v)
}

// libDir is the directory of the shared libraries a self-contained build
// (LocalDir's: its own libpq, ICU, OpenSSL) ships beside its bin directory,
// or "" for a build that uses the system's, such as Debian's.
func libDir(binDir string) string {
	dir := filepath.Join(filepath.Dir(binDir), "lib")
	if _, err := os.Stat(filepath.Join(dir, "libpq.so.5")); err != nil {
		return ""
	}
	return dir
}

// versionOfDebianDir turns /usr/lib/postgresql/9.6/bin into 9.6 for sorting;
// unparsable names sort last.
func versionOfDebianDir(dir string) float64 {
	v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
	if err != nil {
		return -1
	}
	return v
}

func hasServerBinaries(dir string) error {
	var missing []string
	for _, name := range []string{"initdb", "postgres"} {
		if hasProgram(filepath.Join(dir, name)) != nil {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("no executable %s", strings.Join(missing, " or "))
	}
	return nil
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)(?:\.(\d+))?`)

// parseVersion reads the major version from `postgres --version` output such
// as "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)". Before 10 the
// major version had two parts; 9.6 is reported as 9, which is below
// MinVersion either way.
func parseVersion(out string) (int, error) {
	m := versionRE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("unrecognised version string %q", strings.TrimSpace(out))
	}
	major, err := strconv.Atoi(m[1])
	if err != nil {
		return 0, fmt.Errorf("unrecognised version string %q: %w", strings.TrimSpace(out), err)
	}
	return major, nil
}

// serverVersion runs `postgres --version`; postgres answers it before its
// refuse-to-run-as-root check, so this works as root.
func serverVersion(ctx context.Context, binDir string) (int, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "postgres"), "--version")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("run postgres --version: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	v, err := parseVersion(string(out))
	if err != nil {
		return 0, fmt.Errorf("run postgres --version: %w", err)
	}
	if v < MinVersion {
		return 0, fmt.Errorf("postgres in %s is version %d: %w", binDir, v, errTooOld)
	}
	return v, nil
}

var errTooOld = errors.New("PostgreSQL 14 or later is required (compute_query_id)")

// ErrServerOnlyBuild is returned by Server.Program for a client program that
// the build does not ship: the npm registry's builds that
// scripts/install-postgres.sh installs for some versions hold initdb, pg_ctl
// and postgres only (no psql, pg_dump, pg_basebackup, pg_recvlogical, pgbench).
var ErrServerOnlyBuild = errors.New("this PostgreSQL build ships the server only, no client programs")

// Program returns the path of the build's program name (pg_dump,
// pg_basebackup, …). When the build lacks it the error says why: it wraps
// ErrServerOnlyBuild when the build has no psql either (a server-only build,
// where its absence is expected), and is a plain error otherwise (a client
// package missing from a full installation).
func (s *Server) Program(name string) (string, error) {
	path := filepath.Join(s.binDir, name)
	if err := hasProgram(path); err == nil {
		return path, nil
	}
	if hasProgram(filepath.Join(s.binDir, "psql")) != nil {
		return "", fmt.Errorf("PostgreSQL %d in %s has no %s: %w", s.version, s.binDir, name, ErrServerOnlyBuild)
	}
	return "", fmt.Errorf("PostgreSQL %d in %s has no %s (install the distribution's client package)", s.version, s.binDir, name)
}

func hasProgram(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}
