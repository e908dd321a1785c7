/* hello-world seed image for sandpit: a tiny static program that explains
 * what just happened. Built by ops/seed/build with gcc -static -Os -s. */
#include <unistd.h>

static const char message[] =
    "\n"
    "Hello from Docker, running in your sandpit node!\n"
    "This message shows that your installation appears to be working correctly.\n"
    "\n"
    "To generate this message, Docker took the following steps:\n"
    " 1. The Docker client contacted the Docker daemon.\n"
    " 2. The Docker daemon pulled the \"hello-world\" image from the registry mirror\n"
    "    of this sandpit (a local copy: no internet needed).\n"
    " 3. The Docker daemon created a new container from that image which runs the\n"
    "    executable that produces the output you are currently reading.\n"
    " 4. The Docker daemon streamed that output to the Docker client, which sent it\n"
    "    to your terminal.\n"
    "\n"
    "To try something more ambitious, you can run a shell in a container with:\n"
    " $ docker run -it busybox sh\n"
    "\n"
    "Or start a web server and look at it:\n"
    " $ docker run -d -p 8080:80 nginx\n"
    " $ curl localhost:8080\n"
    "\n";

int main(void)
{
    const char *p = message;
    size_t left = sizeof(message) - 1;
    while (left > 0) {
        ssize_t n = write(1, p, left);
        if (n <= 0)
            return 1;
        p += n;
        left -= (size_t)n;
    }
    return 0;
}
