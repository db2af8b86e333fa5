# Installs the default config (config/portico.yaml) into PREFIX/etc/portico/
# (/etc/portico for the prefix /usr), its service directory made absolute:
# PREFIX/share/portico/services. Run by `cmake --install` (install(SCRIPT)),
# so the prefix is the one given there; PT_CONFIG_SRC and PT_CONFIG_TMP come
# from CMakeLists.txt.
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(pt_etc "/etc/portico")
else()
  set(pt_etc "${CMAKE_INSTALL_PREFIX}/etc/portico")
endif()
file(READ "${PT_CONFIG_SRC}" pt_text)
set(pt_services "${CMAKE_INSTALL_PREFIX}/share/portico/services")
string(REPLACE "dirs: [../services]" "dirs: [${pt_services}]" pt_new "${pt_text}")
if(pt_new STREQUAL pt_text)
  message(FATAL_ERROR "${PT_CONFIG_SRC}: no 'dirs: [../services]' to point at ${pt_services}")
endif()
string(REPLACE "Paths are relative to this file's directory."
  "Installed by cmake --install: services from ${pt_services}."
  pt_new "${pt_new}")
file(WRITE "${PT_CONFIG_TMP}/portico.yaml" "${pt_new}")
file(INSTALL DESTINATION "${pt_etc}" TYPE FILE FILES "${PT_CONFIG_TMP}/portico.yaml")
