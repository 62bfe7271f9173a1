# Golden CLI test of ds-tasks (included by tests/cli/CMakeLists.txt).
if(TARGET ds-tasks)
  add_test(NAME cli_ds_tasks COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/ds_tasks.sh $<TARGET_FILE:ds-tasks>)
  set_tests_properties(cli_ds_tasks PROPERTIES TIMEOUT 120)
endif()
