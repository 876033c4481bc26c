package pgembed

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// prepare makes c.dir hold a cluster the server's OS user can use.
func (c *Cluster) prepare(ctx context.Context) error {
	parent := filepath.Dir(c.dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("create parent of PostgreSQL cluster directory: %w", err)
	}
	if err := c.owner.checkReachable(parent); err != nil {
		return err
	}
	_, err := os.Stat(filepath.Join(c.dir, versionFile))
	switch {
	case err == nil:
		return c.owner.chownTree(c.dir, c.log)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("inspect PostgreSQL cluster directory: %w", err)
	}

	entries, err := os.ReadDir(c.dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return c.initdbAside(ctx)
	case err != nil:
		return fmt.Errorf("inspect PostgreSQL cluster directory: %w", err)
	case len(entries) > 0:
		return fmt.Errorf("PostgreSQL cluster directory %s is not empty but holds no cluster (no %s): remove it or choose another --data-dir",
			c.dir, versionFile)
	}
	// An existing empty directory may be a mount point or a symlink the
	// user set up, so it is initialised where it is.
	if err := c.owner.chown(c.dir); err != nil {
		return err
	}
	return c.initdb(ctx, c.dir)
}

// initdbAside initialises the cluster next to c.dir and renames it into
// place, so a process killed during initdb never leaves a half-made cluster
// that later starts would trip over.
func (c *Cluster) initdbAside(ctx context.Context) error {
	tmp := c.dir + ".initdb-tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("remove leftover of an interrupted initdb: %w", err)
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("create PostgreSQL cluster directory: %w", err)
	}
	if err := c.owner.chown(tmp); err != nil {
		return err
	}
	if err := c.initdb(ctx, tmp); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := os.Rename(tmp, c.dir); err != nil {
		return fmt.Errorf("move new PostgreSQL cluster into place: %w", err)
	}
	return nil
}

func (c *Cluster) initdb(ctx context.Context, dir string) error {
	c.log.Info("initialising PostgreSQL cluster", "bin", c.bins.dir)
	args := []string{
		"-D", dir,
		"-U", superuser,
		// Only loopback connections reach the server (listen_addresses
		// and the generated pg_hba.conf), so no passwords to manage.
		"--auth=trust",
		"--encoding=UTF8",
		// C collation: fast, and the same on every machine.
		"--locale=C",
		"--no-instructions",
	}
	if c.ephemeral {
		args = append(args, "--no-sync")
	}
	if err := c.runIn(ctx, dir, c.bins.initdb, args...); err != nil {
		return fmt.Errorf("initialise PostgreSQL cluster in %s: %w", c.dir, err)
	}
	return nil
}

// osUser is the unprivileged account the server runs as when we are root.
// A nil *osUser means "whoever we are", and its methods do nothing.
type osUser struct {
	name     string
	uid, gid uint32
	home     string
}

// serverUser picks the account to run the PostgreSQL programs as: initdb
// and postgres refuse to run as root.
func serverUser() (*osUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := lookupUser(name)
		if err == nil && u.uid != 0 {
			return u, nil
		}
	}
	return nil, errors.New("start PostgreSQL: running as root, but there is no postgres or nobody OS user to run the server as (PostgreSQL refuses to run as root): create a postgres user or run as a regular user")
}

func lookupUser(name string) (*osUser, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("OS user %s has non-numeric ids %s:%s", name, u.Uid, u.Gid)
	}
	return &osUser{name: name, uid: uint32(uid), gid: uint32(gid), home: u.HomeDir}, nil
}

func (u *osUser) credential() *syscall.Credential {
	if u == nil {
		return nil
	}
	// Groups left empty drops root's supplementary groups too.
	return &syscall.Credential{Uid: u.uid, Gid: u.gid}
}

func (u *osUser) chown(path string) error {
	if u == nil {
		return nil
	}
	if err := os.Lchown(path, int(u.uid), int(u.gid)); err != nil {
		return fmt.Errorf("hand %s to OS user %s: %w", path, u.name, err)
	}
	return nil
}

// chownTree gives an existing cluster to u if it belongs to someone else,
// e.g. because an earlier run used a different account.
func (u *osUser) chownTree(dir string, log interface{ Info(string, ...any) }) error {
	if u == nil {
		return nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("inspect PostgreSQL cluster directory: %w", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == u.uid && st.Gid == u.gid {
		return nil
	}
	log.Info("handing PostgreSQL cluster to OS user", "user", u.name)
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return u.chown(path)
	})
}

// checkReachable fails unless u can traverse dir and every directory above
// it: the server must reach its data directory, and a root-owned 0700
// directory on the way (a home or temporary directory, say) blocks it.
func (u *osUser) checkReachable(dir string) error {
	if u == nil {
		return nil
	}
	var blocked []string
	for p := dir; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("inspect %s: %w", p, err)
		}
		if !u.canTraverse(fi) {
			blocked = append([]string{p}, blocked...)
		}
		if p == filepath.Dir(p) {
			break
		}
	}
	if len(blocked) == 0 {
		return nil
	}
	return fmt.Errorf("PostgreSQL runs as OS user %s, which cannot enter %s: choose a --data-dir elsewhere or run: chmod o+x %s",
		u.name, strings.Join(blocked, ", "), strings.Join(blocked, " "))
}

func (u *osUser) canTraverse(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	perm := fi.Mode().Perm()
	switch {
	case st.Uid == u.uid:
		return perm&0o100 != 0
	case st.Gid == u.gid:
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}
