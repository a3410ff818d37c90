/*
 * cedana: the workload wrapper of the busybox image (/bin/cedana).
 *
 * Sends stdin, stdout and stderr to container_io.txt in the current
 * directory, then execs its arguments: `cedana test.sh` runs test.sh.
 * Checkpoint/restore relies on this: the workload holds no terminal and
 * no file outside the container rootfs, only a file CRIU can reopen.
 *
 * Build: gcc -static -Os -o cedana cedana.c
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define IO_FILE "container_io.txt"

int main(int argc, char **argv)
{
	int fd, i;

	if (argc < 2) {
		fprintf(stderr, "usage: cedana COMMAND [ARG...]\n");
		return 2;
	}

	/* O_APPEND: a restored workload keeps writing at the end. */
	fd = open(IO_FILE, O_RDWR | O_CREAT | O_APPEND, 0644);
	if (fd < 0) {
		fprintf(stderr, "cedana: cannot open %s: %s\n", IO_FILE,
			strerror(errno));
		return 1;
	}
	for (i = 0; i < 3; i++) {
		if (dup2(fd, i) < 0) {
			/* stderr may already be gone: report the
			 * failure through the exit status as well. */
			fprintf(stderr, "cedana: dup2 onto fd %d: %s\n", i,
				strerror(errno));
			return 1;
		}
	}
	if (fd > 2)
		close(fd);

	execvp(argv[1], argv + 1);
	/* stderr is container_io.txt now: the message lands there. */
	fprintf(stderr, "cedana: cannot exec %s: %s\n", argv[1],
		strerror(errno));
	return 127;
}
