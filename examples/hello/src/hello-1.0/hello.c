#include <stdio.h>

int main(void)
{
	printf("Hello from jailbake\n");
	return 0;
}
