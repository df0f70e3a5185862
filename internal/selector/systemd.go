package selector

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// maxSystemdUnitName is the longest unit name systemd accepts
// (UNIT_NAME_MAX - 1).
const maxSystemdUnitName = 255

// systemdUnitTypes are the suffixes systemd knows (unit_type_from_string).
var systemdUnitTypes = []string{"automount", "device", "mount", "path", "scope", "service", "slice", "socket", "swap", "target", "timer"}

// CheckSystemdUnitName checks name against systemd's rules for a unit a
// process can be in, a plain unit or an instance of a template
// (unit_name_is_valid with UNIT_NAME_PLAIN|UNIT_NAME_INSTANCE): at most 255
// bytes of ASCII letters, digits, ":-_.\" and "@" (not first), then a known
// type suffix. A template (foo@.service) is refused: only its instances run.
func CheckSystemdUnitName(name string) error {
	if name == "" {
		return fmt.Errorf("systemd unit name is empty")
	}
	if len(name) > maxSystemdUnitName {
		return fmt.Errorf("systemd unit name %q is %d bytes; the limit is %d", clip(name), len(name), maxSystemdUnitName)
	}
	dot := strings.LastIndexByte(name, '.')
	if dot <= 0 {
		return fmt.Errorf("systemd unit name %q has no type suffix; want e.g. nginx.service", clip(name))
	}
	if typ := name[dot+1:]; !slices.Contains(systemdUnitTypes, typ) {
		return fmt.Errorf("systemd unit name %q: unknown unit type %q (known: %s)", clip(name), clip(typ), strings.Join(systemdUnitTypes, ", "))
	}
	prefix := name[:dot]
	if i := strings.IndexFunc(prefix, func(r rune) bool { return !isUnitNameChar(r) }); i >= 0 {
		r, _ := utf8.DecodeRuneInString(prefix[i:])
		return fmt.Errorf("systemd unit name %q holds %q: unit names hold ASCII letters, digits, ':', '-', '_', '.', '\\' and '@'", clip(name), r)
	}
	switch at := strings.IndexByte(prefix, '@'); {
	case at == 0:
		return fmt.Errorf("systemd unit name %q starts with '@'", clip(name))
	case at == len(prefix)-1:
		return fmt.Errorf("systemd unit name %q is a template, which no process runs in; name an instance, e.g. %s", clip(name), clip(prefix+"foo."+name[dot+1:]))
	}
	return nil
}

func isUnitNameChar(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune(":-_.\\@", r)
}

// isSystemdUnitID checks the value of systemd:id: a unit a process can be
// in. Slices group units but never hold a process themselves (systemd's
// sd_pid_get_unit skips them), so an entry naming one could never match.
func isSystemdUnitID(v string) error {
	if err := CheckSystemdUnitName(v); err != nil {
		return err
	}
	if strings.HasSuffix(v, ".slice") {
		return fmt.Errorf("systemd unit %q is a slice: slices hold units, not processes; name the service or scope", clip(v))
	}
	return nil
}
