/* Version string of the build (from CMake's project version). */
const char gateway_version[] = GATEWAY_VERSION;
