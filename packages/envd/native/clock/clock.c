// settimeofday(2) for envd: after a microVM is restored from a snapshot its clock still shows the
// snapshot's time, and envd fixes it on /init without starting a process (a process start in a
// freshly restored guest costs hundreds of milliseconds under emulation).
#include <errno.h>
#include <string.h>
#include <sys/time.h>
#include <node_api.h>

static napi_value SetTime(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  double ms;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_double(env, argv[0], &ms) != napi_ok || ms < 0) {
    napi_throw_type_error(env, NULL, "setTime(epochMilliseconds) needs a non-negative number");
    return NULL;
  }
  struct timeval tv;
  tv.tv_sec = (time_t)(ms / 1000);
  tv.tv_usec = (suseconds_t)((ms - (double)tv.tv_sec * 1000) * 1000);
  if (settimeofday(&tv, NULL) != 0) {
    napi_throw_error(env, "EPERM", strerror(errno));
    return NULL;
  }
  return NULL;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "setTime", NAPI_AUTO_LENGTH, SetTime, NULL, &fn);
  napi_set_named_property(env, exports, "setTime", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
