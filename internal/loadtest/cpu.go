package loadtest

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgxpool"
)

type cpuSample struct {
	cpu    float64 // user + system seconds
	maxRSS int64   // KiB on Linux
}

// cpuTimes reads this process's CPU time and peak resident set.
func cpuTimes() cpuSample {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return cpuSample{}
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return cpuSample{cpu: tv(ru.Utime) + tv(ru.Stime), maxRSS: int64(ru.Maxrss)}
}

// clockTicks is USER_HZ, 100 on every Linux platform Go supports.
const clockTicks = 100

// postgresCPU returns the CPU seconds the PostgreSQL server has used so far:
// the postmaster's own and its reaped children's, plus those of its live
// children. It returns -1 when the server is not a process on this machine
// whose /proc entries can be read.
func postgresCPU(ctx context.Context, pool *pgxpool.Pool) float64 {
	var pid int
	if err := pool.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		return -1
	}
	backend, ok := procStat(pid)
	if !ok || backend.comm != "postgres" {
		return -1
	}
	pm, ok := procStat(backend.ppid)
	if !ok || pm.comm != "postgres" {
		return -1
	}
	total := pm.self + pm.children
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return -1
	}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := procStat(p); ok && st.ppid == backend.ppid {
			total += st.self
		}
	}
	return float64(total) / clockTicks
}

type stat struct {
	comm           string
	ppid           int
	self, children int64 // clock ticks: utime+stime, cutime+cstime
}

func procStat(pid int) (stat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, false
	}
	s := string(b)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return stat{}, false
	}
	// Fields after the command: state ppid … utime(14) stime cutime cstime.
	f := strings.Fields(s[closing+1:])
	if len(f) < 15 {
		return stat{}, false
	}
	num := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
	return stat{comm: s[open+1 : closing], ppid: int(num(1)), self: num(11) + num(12), children: num(13) + num(14)}, true
}
