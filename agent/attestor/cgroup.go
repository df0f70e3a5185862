package attestor

import (
	"fmt"
	"iter"
	"strings"
)

// cgroupLine is one line of /proc/PID/cgroup: a hierarchy's ID, its
// controllers ("" for the cgroup v2 hierarchy, "name=systemd" for
// systemd's v1 one) and the process's cgroup in it.
type cgroupLine struct {
	hierarchy   string
	controllers string
	path        string
}

// cgroupLines yields the lines of a /proc/PID/cgroup file (cgroup v1 and v2
// lines alike), with an error for a line that is not
// hierarchy-ID:controllers:/path. The path may hold colons.
func cgroupLines(data []byte) iter.Seq2[cgroupLine, error] {
	return func(yield func(cgroupLine, error) bool) {
		for line := range strings.Lines(string(data)) {
			line = strings.TrimSuffix(line, "\n")
			if line == "" {
				continue
			}
			fields := strings.SplitN(line, ":", 3)
			if len(fields) != 3 || !strings.HasPrefix(fields[2], "/") {
				if !yield(cgroupLine{}, fmt.Errorf("malformed cgroup line %q: want hierarchy-ID:controllers:/path", line)) {
					return
				}
				continue
			}
			if !yield(cgroupLine{hierarchy: fields[0], controllers: fields[1], path: fields[2]}, nil) {
				return
			}
		}
	}
}
