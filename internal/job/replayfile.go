package job

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// ErrOutsideReplayDir is wrapped by OpenReplayFile for a file that is not
// below the replay directory: named with "..", absolute elsewhere, or
// reached through a symbolic link that leads out.
var ErrOutsideReplayDir = errors.New("outside the replay directory")

// OpenReplayFile opens the file a backfill replays. With a replay
// directory, name must lie below it (relative to it, or absolute inside
// it), and is opened through an os.Root, so that neither ".." nor a
// symbolic link can lead out of it; this is what makes a file parameter
// safe to take from the web. With dir empty, name is opened as it is: a
// person at the command line of the scheduler's own machine may replay any
// file they can read. Only a regular file is opened for reading: a named
// pipe or a device would block the task or never end.
func OpenReplayFile(dir, name string) (*os.File, error) {
	if name == "" {
		return nil, errors.New("no file named")
	}
	// O_NONBLOCK: opening a named pipe must not wait for a writer.
	const flags = os.O_RDONLY | syscall.O_NONBLOCK
	var f *os.File
	var err error
	if dir == "" {
		f, err = os.OpenFile(name, flags, 0)
	} else {
		rel := name
		if filepath.IsAbs(name) {
			abs, aerr := filepath.Abs(dir)
			if aerr != nil {
				return nil, fmt.Errorf("resolving the replay directory %s: %w", dir, aerr)
			}
			if rel, err = filepath.Rel(abs, filepath.Clean(name)); err != nil {
				return nil, fmt.Errorf("file %q: %w", name, ErrOutsideReplayDir)
			}
		}
		if !filepath.IsLocal(rel) {
			return nil, fmt.Errorf("file %q is %w %s: name a file below it", name, ErrOutsideReplayDir, dir)
		}
		root, rerr := os.OpenRoot(dir)
		if rerr != nil {
			return nil, fmt.Errorf("opening the replay directory: %w", rerr)
		}
		f, err = root.OpenFile(rel, flags, 0)
		root.Close()
		if err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, os.ErrPermission) {
			// os.Root refuses a path that escapes through a symbolic
			// link; say so in the caller's terms.
			return nil, fmt.Errorf("file %q is %w %s (%w): name a file below it", name, ErrOutsideReplayDir, dir, err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("opening the replay file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening the replay file: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("the replay file %q is not a regular file", name)
	}
	return f, nil
}
