package web

import (
	"errors"
	"io/fs"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// The data directory's size is recomputed at most every dirSizeEvery:
// walking PostgreSQL's and the broker's files costs far more than the
// statfs behind the free space, which is read with every sample.
const dirSizeEvery = 30 * time.Second

// Free space is low below lowFreeShare of the disk or lowFreeBytes,
// whichever is reached first: PostgreSQL stops accepting writes when the
// disk fills, and a small disk reaches its last 10% quickly.
const (
	lowFreeShare = 0.10
	lowFreeBytes = 5e9
)

// DataDir is the data directory's size and the space left on its disk.
type DataDir struct {
	Path string `json:"path"`
	// SizeBytes is the disk space the directory tree occupies (allocated
	// blocks, as du counts), as of SizedAt.
	SizeBytes  int64     `json:"size_bytes"`
	SizedAt    time.Time `json:"sized_at"`
	FreeBytes  int64     `json:"free_bytes"`
	TotalBytes int64     `json:"total_bytes"`
	// Low is true when free space is below 10% of the disk or 5 GB.
	Low   bool   `json:"low"`
	Error string `json:"error,omitempty"`
}

type diskUsage struct {
	dir string

	mu      sync.Mutex
	size    int64
	sizedAt time.Time
	sizeErr error
}

// measure returns the directory's usage, walking the tree only when the
// last walk is older than dirSizeEvery.
func (d *diskUsage) measure(now time.Time) *DataDir {
	d.mu.Lock()
	if d.sizedAt.IsZero() || now.Sub(d.sizedAt) >= dirSizeEvery {
		d.size, d.sizeErr = treeSize(d.dir)
		d.sizedAt = now
	}
	out := &DataDir{Path: d.dir, SizeBytes: d.size, SizedAt: d.sizedAt.UTC()}
	err := d.sizeErr
	d.mu.Unlock()

	var st syscall.Statfs_t
	if serr := syscall.Statfs(d.dir, &st); serr != nil {
		err = errors.Join(err, serr)
	} else {
		// Bavail, not Bfree: the blocks reserved for root are no use to
		// PostgreSQL running as an ordinary user.
		out.FreeBytes = int64(st.Bavail) * int64(st.Bsize)
		out.TotalBytes = int64(st.Blocks) * int64(st.Bsize)
		out.Low = lowFree(out.FreeBytes, out.TotalBytes)
	}
	if err != nil {
		out.Error = err.Error()
	}
	return out
}

// lowFree reports whether free bytes of a disk of total bytes is little
// enough to warn about.
func lowFree(free, total int64) bool {
	return free < lowFreeBytes || float64(free) < lowFreeShare*float64(total)
}

// treeSize adds up the blocks allocated to everything under dir. Entries
// that vanish during the walk (PostgreSQL's temporary and recycled WAL
// files) are skipped, not errors.
func treeSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			if path == dir {
				return err
			}
			return nil // vanished or unreadable: a figure for the rest beats none
		}
		info, err := e.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512 // st_blocks is in 512-byte units whatever the block size
		} else {
			n += info.Size()
		}
		return nil
	})
	return n, err
}
