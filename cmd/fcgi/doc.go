// Fcgi is a toolkit for FastCGI in one static binary: it talks to,
// checks, loads and runs FastCGI applications, doing the jobs of
// cgi-fcgi, fcgiwrap, spawn-fcgi and the shell scripts around them.
//
// Usage:
//
//	fcgi <command> [flags] [arguments]
//
// The commands are:
//
//	values   ask an application for its limits (FCGI_GET_VALUES)
//	lint     check a live application against the FastCGI spec and what web servers need
//
// Run "fcgi <command> --help" for a command's flags and examples.
package main
