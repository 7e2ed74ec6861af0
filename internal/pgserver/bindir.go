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

// FindBinDir returns the directory holding the PostgreSQL server binaries
// (initdb and postgres), looking in this order: $PGTRIPWIRE_PG_BINDIR,
// `pg_config --bindir`, then the highest-versioned /usr/lib/postgresql/<v>/bin.
// The error lists every place that was tried.
func FindBinDir() (string, error) {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		if err := hasServerBinaries(dir); err != nil {
			return "", fmt.Errorf("find PostgreSQL binaries: $%s=%s: %w", BinDirEnv, dir, err)
		}
		return dir, nil
	}

	var tried []string
	tried = append(tried, "$"+BinDirEnv+" is unset")

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
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
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
