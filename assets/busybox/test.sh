#!/bin/sh
# The counter workload: 1, 2, 3, ... one a line on stdout, every 0.5 s,
# forever.  Its output is its state: after a restore it must go on from
# the last value it wrote.
i=1
while true; do
	echo "$i"
	i=$((i + 1))
	sleep 0.5
done
