// Package fpmhint says what to check when PHP-FPM (or PHP) cannot run a
// script: its messages name neither the cause nor the setting. The Gateway
// logs the hint with the request, and fcgi call prints it after the
// application's stderr.
package fpmhint

import "strings"

// hints pair what PHP-FPM (or PHP) writes to stderr when it cannot run a
// script with what to check, for the log line of the request: the messages
// themselves name neither the cause nor the setting.
var hints = []struct{ match, hint string }{
	{"Primary script unknown",
		"PHP-FPM found no file at SCRIPT_FILENAME: it must see the document root at the same path as the gateway (the same mount or volume in its container, no chroot, or a Root set to PHP-FPM's path), and the script must exist there"},
	{"(see security.limit_extensions)",
		"PHP-FPM runs only scripts whose names end in its pool's security.limit_extensions (.php by default): check the script's name, that setting, and the gateway's ScriptExt"},
	{"open_basedir restriction in effect",
		"the file is outside PHP's open_basedir: add the document root to open_basedir (php.ini, or php_admin_value[open_basedir] in the pool)"},
	{"Permission denied",
		"access denied: the PHP-FPM pool's user (its user and group settings) cannot read the script; check the script's permissions and those of every directory above it"},
}

// For returns what to check for the stderr message msg, or "".
func For(msg string) string {
	for _, h := range hints {
		if strings.Contains(msg, h.match) {
			return h.hint
		}
	}
	return ""
}
