# Writes OUT: a C++ file defining racker::engine::NAME with the text of IN (a seccomp profile
# of data/seccomp/, or the package managers' recipes of data/provision/).
file(READ ${IN} text)
string(FIND "${text}" ")seccomp_profile\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${IN} contains the raw string delimiter")
endif()
file(WRITE ${OUT}.tmp
  "// generated from ${IN} by embed_seccomp.cmake: do not edit\n"
  "namespace racker::engine {\n"
  "extern const char* const ${NAME};\n"
  "const char* const ${NAME} = R\"seccomp_profile(${text})seccomp_profile\";\n"
  "}  // namespace racker::engine\n")
file(RENAME ${OUT}.tmp ${OUT})
