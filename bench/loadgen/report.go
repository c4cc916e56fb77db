package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procSample is what /proc says about a process at one instant.
type procSample struct {
	cpuTicks     int64 // utime + stime, USER_HZ (1/100 s) units, all threads incl. exited ones
	sysTicks     int64 // stime alone: time in the kernel (syscalls, wakeups, loopback TCP)
	rssKB, hwmKB int64
	threads      int
}

func readProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("read /proc/%d/stat: %w", pid, err)
	}
	// Fields after "(comm)": state(3) ppid ... utime(14) stime(15).
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	s.cpuTicks = ut + st
	s.sysTicks = st
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("read /proc/%d/status: %w", pid, err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(status)))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(fields[0], 10, 64)
		switch k {
		case "VmRSS":
			s.rssKB = n
		case "VmHWM":
			s.hwmKB = n
		case "Threads":
			s.threads = int(n)
		}
	}
	return s, nil
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// result is one measured run.
type result struct {
	Label              string         `json:"label"`
	Mode               string         `json:"mode,omitempty"` // modeFull or modeSSO; absent in older lines: full
	C                  int            `json:"c"`
	OK                 int            `json:"ok"`
	Errors             int            `json:"errors"`
	ErrorSamples       map[string]int `json:"error_samples,omitempty"`
	Seconds            float64        `json:"seconds"`
	LoginsPerS         float64        `json:"logins_per_s"`
	P50                float64        `json:"p50_ms"`
	P95                float64        `json:"p95_ms"`
	P99                float64        `json:"p99_ms"`
	Max                float64        `json:"max_ms"`
	BrowserP50         float64        `json:"browser_leg_p50_ms"`
	TokenP50           float64        `json:"token_leg_p50_ms"`
	CPUMsPerLogin      float64        `json:"broker_cpu_ms_per_login"`
	SysMsPerLogin      float64        `json:"broker_sys_ms_per_login"`
	RSSMB              float64        `json:"broker_rss_mb"`
	HWMMB              float64        `json:"broker_hwm_mb"`
	Threads            int            `json:"broker_threads"`
	RedisCPUMsPerLogin float64        `json:"redis_cpu_ms_per_login"`
	GenCPUMsPerLogin   float64        `json:"loadgen_cpu_ms_per_login"`
	IdPCPUMsPerLogin   float64        `json:"idp_cpu_ms_per_login"`
}

func (r *result) print(w io.Writer) {
	fmt.Fprintf(w, "%s %s c=%d: %d logins in %.2fs = %.0f logins/s; latency p50 %.2f ms, p95 %.2f ms, p99 %.2f ms, max %.2f ms (browser leg p50 %.2f, token p50 %.2f); errors %d\n",
		r.Label, r.mode(), r.C, r.OK, r.Seconds, r.LoginsPerS, r.P50, r.P95, r.P99, r.Max, r.BrowserP50, r.TokenP50, r.Errors)
	if r.CPUMsPerLogin > 0 || r.RSSMB > 0 {
		fmt.Fprintf(w, "  broker CPU %.3f ms/login (kernel %.3f), RSS %.1f MB (peak %.1f MB, %d threads); redis CPU %.3f ms/login; upstream IdP CPU %.3f ms/login; loadgen CPU %.3f ms/login\n",
			r.CPUMsPerLogin, r.SysMsPerLogin, r.RSSMB, r.HWMMB, r.Threads, r.RedisCPUMsPerLogin, r.IdPCPUMsPerLogin, r.GenCPUMsPerLogin)
	}
	for msg, n := range r.ErrorSamples {
		fmt.Fprintf(w, "  error ×%d: %s\n", n, msg)
	}
}

// mode is the run's mode; lines written before modes existed are full logins.
func (r *result) mode() string {
	if r.Mode == "" {
		return modeFull
	}
	return r.Mode
}

func (r *result) appendJSON(path string) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ssoCPUTarget is the most a single sign-on login may cost the broker, as a fraction of a
// full brokered login's CPU (docs: bench/README.md, "Single sign-on").
const ssoCPUTarget = 1.0 / 3

// summaryKey is one row of the summary: the runs of one label, mode and concurrency.
type summaryKey struct {
	label, mode string
	c           int
}

// readRuns reads the JSON lines of path, grouped by row, rows in the order first seen.
func readRuns(path string) ([]summaryKey, map[summaryKey][]result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	var order []summaryKey
	groups := map[summaryKey][]result{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		k := summaryKey{r.Label, r.mode(), r.C}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	return order, groups, nil
}

// medianCPU is the median broker CPU ms per login of runs.
func medianCPU(rs []result) float64 {
	cpu := make([]float64, len(rs))
	for i, r := range rs {
		cpu[i] = r.CPUMsPerLogin
	}
	return median(cpu)
}

// ssoRatio compares single sign-on with full logins at one label and concurrency.
type ssoRatio struct {
	label     string
	c         int
	full, sso float64 // median broker CPU ms per login
}

func (r ssoRatio) ratio() float64 { return r.sso / r.full }

// pass reports whether the ratio is within ssoCPUTarget (with a rounding margin: 0.2 ÷ 0.6 is
// a third).
func (r ssoRatio) pass() bool { return r.ratio() <= ssoCPUTarget+1e-9 }

// ssoRatios pairs every single sign-on row with the full-login row of the same label and
// concurrency (rows without a partner, or with no CPU figure, are left out), in row order.
func ssoRatios(order []summaryKey, groups map[summaryKey][]result) []ssoRatio {
	var out []ssoRatio
	for _, k := range order {
		if k.mode != modeSSO {
			continue
		}
		full, ok := groups[summaryKey{k.label, modeFull, k.c}]
		if !ok {
			continue
		}
		r := ssoRatio{label: k.label, c: k.c, full: medianCPU(full), sso: medianCPU(groups[k])}
		if r.full > 0 && r.sso > 0 {
			out = append(out, r)
		}
	}
	return out
}

// printSummary groups runs by (label, mode, c) and prints medians, with the CPU range across
// runs as the noise indicator, then, for every level measured in both modes, the single
// sign-on login's broker CPU as a fraction of the full login's and whether it is within
// ssoCPUTarget.
func printSummary(w io.Writer, path string) error {
	order, groups, err := readRuns(path)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%-8s %-4s %4s %5s %9s %8s %8s %8s %14s %8s %8s %8s %8s %6s\n",
		"id_token", "mode", "c", "runs", "logins/s", "p50 ms", "p95 ms", "p99 ms", "CPU ms/login", "(range)", "RSS MB", "redis ms", "idp ms", "errors")
	for _, k := range order {
		rs := groups[k]
		col := func(f func(r result) float64) []float64 {
			out := make([]float64, len(rs))
			for i, r := range rs {
				out[i] = f(r)
			}
			return out
		}
		cpu := col(func(r result) float64 { return r.CPUMsPerLogin })
		errs := 0
		for _, r := range rs {
			errs += r.Errors
		}
		fmt.Fprintf(w, "%-8s %-4s %4d %5d %9.0f %8.2f %8.2f %8.2f %14.3f %8s %8.1f %8.3f %8.3f %6d\n",
			k.label, k.mode, k.c, len(rs),
			median(col(func(r result) float64 { return r.LoginsPerS })),
			median(col(func(r result) float64 { return r.P50 })),
			median(col(func(r result) float64 { return r.P95 })),
			median(col(func(r result) float64 { return r.P99 })),
			median(cpu), fmt.Sprintf("%.2f-%.2f", slices.Min(cpu), slices.Max(cpu)),
			median(col(func(r result) float64 { return r.RSSMB })),
			median(col(func(r result) float64 { return r.RedisCPUMsPerLogin })),
			median(col(func(r result) float64 { return r.IdPCPUMsPerLogin })),
			errs)
	}
	if ratios := ssoRatios(order, groups); len(ratios) > 0 {
		fmt.Fprintf(w, "\nSingle sign-on login ÷ full login, broker CPU ms per login (medians; target ≤ 1/3):\n")
		for _, r := range ratios {
			verdict := "pass"
			if !r.pass() {
				verdict = "FAIL"
			}
			fmt.Fprintf(w, "%-8s c=%-4d sso %.3f ÷ full %.3f = %.3f  %s\n", r.label, r.c, r.sso, r.full, r.ratio(), verdict)
		}
	}
	return nil
}
