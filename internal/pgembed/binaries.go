package pgembed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// binaries are the PostgreSQL programs, all from one installation: initdb
// and pg_ctl find postgres next to themselves.
type binaries struct {
	dir                     string
	initdb, pgCtl, postgres string
}

// findBinaries locates the programs. An explicit binDir is the only place
// looked at. Otherwise the candidates are, in order, pg_config --bindir,
// PATH, and the usual package locations, newest version first; when the
// cluster exists already, the first candidate of the major version that
// created it wins, since a different major version cannot open it.
func findBinaries(ctx context.Context, binDir, clusterDir string) (binaries, error) {
	if binDir != "" {
		if b, ok := binariesIn(binDir); ok {
			return b, nil
		}
		return binaries{}, fmt.Errorf("%w (looked in %s)", ErrNoBinaries, binDir)
	}

	var found []binaries
	seen := map[string]bool{}
	for _, dir := range candidateDirs(ctx) {
		b, ok := binariesIn(dir)
		if !ok || seen[b.dir] {
			continue
		}
		seen[b.dir] = true
		found = append(found, b)
	}
	if len(found) == 0 {
		return binaries{}, fmt.Errorf("%w (looked in pg_config --bindir, PATH and the usual install locations)", ErrNoBinaries)
	}

	want, err := os.ReadFile(filepath.Join(clusterDir, versionFile))
	if err != nil || len(found) == 1 {
		return found[0], nil
	}
	major := strings.TrimSpace(string(want))
	for _, b := range found {
		if b.majorVersion(ctx) == major {
			return b, nil
		}
	}
	return binaries{}, fmt.Errorf("PostgreSQL cluster in %s was created by PostgreSQL %s, but only other versions are installed (%s): install PostgreSQL %s or set the binary directory explicitly",
		clusterDir, major, found[0].dir, major)
}

// binariesIn returns the programs in dir, following symlinks (e.g.
// /usr/local/bin/postgres -> /usr/lib/postgresql/15/bin/postgres) to the
// directory they really live in.
func binariesIn(dir string) (binaries, bool) {
	postgres, err := filepath.EvalSymlinks(filepath.Join(dir, "postgres"))
	if err != nil || !executable(postgres) {
		return binaries{}, false
	}
	real := filepath.Dir(postgres)
	b := binaries{
		dir:      real,
		initdb:   filepath.Join(real, "initdb"),
		pgCtl:    filepath.Join(real, "pg_ctl"),
		postgres: postgres,
	}
	if !executable(b.initdb) || !executable(b.pgCtl) {
		return binaries{}, false
	}
	return b, true
}

func executable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

func candidateDirs(ctx context.Context) []string {
	var dirs []string
	if pgConfig, err := exec.LookPath("pg_config"); err == nil {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := exec.CommandContext(ctx, pgConfig, "--bindir").Output()
		cancel()
		if err == nil {
			dirs = append(dirs, strings.TrimSpace(string(out)))
		}
	}
	for _, name := range []string{"postgres", "pg_ctl", "initdb"} {
		if path, err := exec.LookPath(name); err == nil {
			dirs = append(dirs, filepath.Dir(path))
		}
	}
	for _, pattern := range []string{
		"/usr/lib/postgresql/*/bin",          // Debian, Ubuntu
		"/usr/pgsql-*/bin",                   // RHEL, Fedora (PGDG)
		"/opt/homebrew/opt/postgresql@*/bin", // Homebrew, Apple silicon
		"/usr/local/opt/postgresql@*/bin",    // Homebrew, Intel
		"/Applications/Postgres.app/Contents/Versions/*/bin",
	} {
		matches, _ := filepath.Glob(pattern)
		slices.SortStableFunc(matches, func(a, b string) int { return compareVersions(b, a) })
		dirs = append(dirs, matches...)
	}
	return append(dirs, "/usr/local/pgsql/bin", "/opt/homebrew/bin", "/usr/local/bin")
}

var numbers = regexp.MustCompile(`\d+`)

// compareVersions orders paths by the version numbers in them, so
// .../postgresql/10/bin sorts after .../postgresql/9.6/bin.
func compareVersions(a, b string) int {
	na, nb := numbers.FindAllString(a, -1), numbers.FindAllString(b, -1)
	for i := 0; i < len(na) && i < len(nb); i++ {
		x, _ := strconv.Atoi(na[i])
		y, _ := strconv.Atoi(nb[i])
		if x != y {
			return x - y
		}
	}
	return len(na) - len(nb)
}

var versionOutput = regexp.MustCompile(`\(PostgreSQL\) (\d+)(?:\.(\d+))?`)

// majorVersion asks postgres for its major version as PG_VERSION records
// it ("15", or "9.6" before version 10); "" if it can't tell.
func (b binaries) majorVersion(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// --version is answered before postgres' refusal to run as root.
	out, err := exec.CommandContext(ctx, b.postgres, "--version").Output()
	if err != nil {
		return ""
	}
	m := versionOutput.FindSubmatch(out)
	if m == nil {
		return ""
	}
	if major, _ := strconv.Atoi(string(m[1])); major < 10 && len(m[2]) > 0 {
		return string(m[1]) + "." + string(m[2])
	}
	return string(m[1])
}
