// Package opcmd holds the logic of the operator commands, netvol volume
// (ls, inspect, create, clone, resize, rm) and what they share with netvol
// doctor: how to reach the servers (Conn, netvol plugin's connection
// settings) and how to print (tables for people, JSON for programs).
// cmd/netvol maps the flags onto these; nothing here knows cobra.
package opcmd
