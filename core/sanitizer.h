/*
 * sanitizer: which sanitizer this translation unit is built with, for gcc
 * (__SANITIZE_*__) and clang (__has_feature) alike. CORE_ASAN and CORE_TSAN
 * are defined (to 1) or not.
 */
#ifndef CORE_SANITIZER_H
#define CORE_SANITIZER_H

#if defined(__SANITIZE_ADDRESS__)
#define CORE_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define CORE_TSAN 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(CORE_ASAN)
#define CORE_ASAN 1
#endif
#if __has_feature(thread_sanitizer) && !defined(CORE_TSAN)
#define CORE_TSAN 1
#endif
#endif

#endif
